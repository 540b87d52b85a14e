// uint64 handling: every uint64 of the API is a bigint in this SDK; inputs also
// accept non-negative safe-integer numbers.

const MAX_UINT64 = (1n << 64n) - 1n;

/** Converts a bigint or number to a uint64 bigint, or throws a RangeError/TypeError naming `what`. */
export function toUint64(value: bigint | number, what: string): bigint {
  let v: bigint;
  if (typeof value === "bigint") {
    v = value;
  } else if (typeof value === "number") {
    if (!Number.isSafeInteger(value)) {
      throw new RangeError(`${what} must be a non-negative integer, got ${value}`);
    }
    v = BigInt(value);
  } else {
    throw new TypeError(`${what} must be a bigint or a number, got ${typeof value}`);
  }
  if (v < 0n || v > MAX_UINT64) {
    throw new RangeError(`${what} must be within 0..2^64-1, got ${v}`);
  }
  return v;
}

/** Converts a number to a uint32, or throws a RangeError naming `what`. */
export function toUint32(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw new RangeError(`${what} must be an integer within 0..2^32-1, got ${value}`);
  }
  return value;
}

// The optimistic-concurrency check of an append.
import { ExpectedVersionKind } from "./gen/eventstore/v1/eventstore";
import { toUint64 } from "./numbers";

export type ExpectedVersionName = "any" | "noStream" | "streamExists" | "exact";

/**
 * What an append expects of its stream:
 * - `ExpectedVersion.any()` — always passes (the default);
 * - `ExpectedVersion.noStream()` — the stream has no events;
 * - `ExpectedVersion.streamExists()` — the stream has at least one event;
 * - `ExpectedVersion.exact(n)` — the stream's last version is n (`exact(0)` = no stream).
 */
export class ExpectedVersion {
  private constructor(
    readonly kind: ExpectedVersionName,
    /** The version for `exact`, 0n otherwise. */
    readonly version: bigint,
  ) {}

  private static readonly ANY = new ExpectedVersion("any", 0n);
  private static readonly NO_STREAM = new ExpectedVersion("noStream", 0n);
  private static readonly STREAM_EXISTS = new ExpectedVersion("streamExists", 0n);

  /** Always passes (the default of `append`). */
  static any(): ExpectedVersion {
    return ExpectedVersion.ANY;
  }

  /** Passes when the stream has no events. */
  static noStream(): ExpectedVersion {
    return ExpectedVersion.NO_STREAM;
  }

  /** Passes when the stream has at least one event. */
  static streamExists(): ExpectedVersion {
    return ExpectedVersion.STREAM_EXISTS;
  }

  /** The stream's last version must be `version` (a non-negative integer; 0 = no stream). */
  static exact(version: bigint | number): ExpectedVersion {
    return new ExpectedVersion("exact", toUint64(version, "expected version"));
  }

  /** The wire form: [expected_kind, expected_version]. */
  toProto(): { expectedKind: ExpectedVersionKind; expectedVersion: bigint } {
    switch (this.kind) {
      case "any":
        return { expectedKind: ExpectedVersionKind.EXPECTED_ANY, expectedVersion: 0n };
      case "noStream":
        return { expectedKind: ExpectedVersionKind.EXPECTED_NO_STREAM, expectedVersion: 0n };
      case "streamExists":
        return { expectedKind: ExpectedVersionKind.EXPECTED_STREAM_EXISTS, expectedVersion: 0n };
      case "exact":
        return { expectedKind: ExpectedVersionKind.EXPECTED_EXACT, expectedVersion: this.version };
    }
  }

  toString(): string {
    return this.kind === "exact" ? `exact(${this.version})` : `${this.kind}()`;
  }
}

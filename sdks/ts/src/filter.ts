// The filter of ReadAll and Subscribe.
import * as pb from "./gen/eventstore/v1/eventstore";

/** Selects events of the global log; both parts given → both must match. */
export interface Filter {
  /** Only streams whose id starts with this. */
  streamPrefix?: string | undefined;
  /** Only these event types (exact names). */
  eventTypes?: readonly string[] | undefined;
}

/** @internal */
export function filterToProto(f: Filter | undefined): pb.Filter | undefined {
  if (f === undefined) return undefined;
  return { streamPrefix: f.streamPrefix ?? "", eventTypes: [...(f.eventTypes ?? [])], items: [] };
}

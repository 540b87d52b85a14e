// The filter of ReadAll and Subscribe.
import * as pb from "./gen/eventstore/v1/eventstore";
import { Query, QueryItem, queryToProto } from "./query";

/** Selects events of the global log; every part given must match. */
export interface Filter {
  /** Only streams whose id starts with this. */
  streamPrefix?: string | undefined;
  /** Only these event types (exact names). */
  eventTypes?: readonly string[] | undefined;
  /** Only events that one of these query items matches (a Query or a list of items). */
  items?: Query | readonly QueryItem[] | undefined;
}

/** @internal */
export function filterToProto(f: Filter | undefined): pb.Filter | undefined {
  if (f === undefined) return undefined;
  return { streamPrefix: f.streamPrefix ?? "", eventTypes: [...(f.eventTypes ?? [])], items: queryToProto(f.items) };
}

// Queries by event type and tag, and the append condition built on them (Extension 1 of the
// API: the Dynamic Consistency Boundary model).
import * as pb from "./gen/eventstore/v1/eventstore";
import { toUint64 } from "./numbers";

/**
 * One item of a query: matches an event whose type is one of `eventTypes` (any type when empty
 * or omitted) and which carries every one of `tags` (any tags when empty or omitted). An item
 * with neither matches every event. Strings are matched exactly as given.
 */
export interface QueryItem {
  eventTypes?: readonly string[] | undefined;
  tags?: readonly string[] | undefined;
}

/**
 * Selects events by type and tag: an event matches when any of the items does (OR). The server
 * allows up to 16 items, each with up to 32 types and 32 tags. Immutable; build it item by item:
 *
 * ```ts
 * const q = Query.of({ eventTypes: ["StudentEnrolled"], tags: ["course:c1"] }).or({ tags: ["student:s7"] });
 * client.readAll({ filter: { items: q } });
 * ```
 */
export class Query implements Iterable<QueryItem> {
  /** The items, OR'ed. */
  readonly items: readonly QueryItem[];

  constructor(items: readonly QueryItem[] = []) {
    this.items = Object.freeze(items.map(copyItem));
  }

  /** A query of the given items (usually one). */
  static of(...items: QueryItem[]): Query {
    return new Query(items);
  }

  /** This query with more items, OR'ed with the others (a new Query). */
  or(...items: QueryItem[]): Query {
    return new Query([...this.items, ...items]);
  }

  [Symbol.iterator](): Iterator<QueryItem> {
    return this.items[Symbol.iterator]();
  }
}

/**
 * Makes an append fail if an event matching `failIfEventsMatch` was committed at a global
 * position above `after` (0 or omitted: anywhere in the log); checked atomically with the commit.
 * `after` is normally the `headPosition` of the read the decision was based on. A failed
 * condition rejects with `AppendConditionFailedError`.
 */
export interface AppendCondition {
  /** 1..16 items (required). */
  failIfEventsMatch: Query | readonly QueryItem[];
  after?: bigint | number | undefined;
}

function strings(values: readonly string[] | undefined, what: string): string[] {
  if (values === undefined) return [];
  if (typeof values === "string" || !Array.isArray(values)) {
    throw new TypeError(`${what} must be an array of strings`);
  }
  for (const v of values) {
    if (typeof v !== "string") throw new TypeError(`${what} must hold strings, got ${typeof v}`);
  }
  return [...values];
}

function copyItem(i: QueryItem): QueryItem {
  if (typeof i !== "object" || i === null) throw new TypeError("a query item must be an object { eventTypes?, tags? }");
  return Object.freeze({ eventTypes: strings(i.eventTypes, "eventTypes"), tags: strings(i.tags, "tags") });
}

/** @internal The wire form of a query (a Query or a list of items). */
export function queryToProto(q: Query | readonly QueryItem[] | undefined): pb.QueryItem[] {
  if (q === undefined) return [];
  const items = q instanceof Query ? q.items : q;
  if (!Array.isArray(items)) throw new TypeError("a query must be a Query or an array of QueryItem");
  return items.map((i: QueryItem) => {
    const c = copyItem(i);
    return { eventTypes: [...(c.eventTypes ?? [])], tags: [...(c.tags ?? [])] };
  });
}

/** @internal The wire form of an AppendCondition. */
export function conditionToProto(c: AppendCondition | undefined): pb.AppendCondition | undefined {
  if (c === undefined) return undefined;
  return { failIfEventsMatch: queryToProto(c.failIfEventsMatch), after: toUint64(c.after ?? 0n, "after") };
}

/** @internal The wire form of tags of an event. */
export function tagsToProto(tags: readonly string[] | undefined): string[] {
  return strings(tags, "tags");
}

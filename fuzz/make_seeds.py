#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into fuzz/corpus/<target>/.

A handful of small valid requests and edge cases per target, encoded by a
minimal protobuf writer below (no protobuf package needed). Deterministic:
running it again rewrites the same files. Field numbers follow
proto/eventstore/v1/eventstore.proto and grpc/reflection/v1alpha.
"""
import os
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))


def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def vf(num, n):  # varint field
    return varint(num << 3) + varint(n)


def lf(num, data):  # length-delimited field
    if isinstance(data, str):
        data = data.encode()
    return varint(num << 3 | 2) + varint(len(data)) + data


def event(event_id="", event_type="Created", version=0, content_type="", payload=b"",
          metadata=(), correlation="", causation="", occurred=0, tags=()):
    m = b""
    if event_id:
        m += lf(1, event_id)
    if event_type:
        m += lf(2, event_type)
    if version:
        m += vf(3, version)
    if content_type:
        m += lf(4, content_type)
    if payload:
        m += lf(5, payload)
    for k, v in metadata:
        m += lf(6, lf(1, k) + lf(2, v))
    if correlation:
        m += lf(7, correlation)
    if causation:
        m += lf(8, causation)
    if occurred:
        m += vf(9, occurred)
    for t in tags:
        m += lf(10, t)
    return m


def item(types=(), tags=()):  # QueryItem
    m = b""
    for t in types:
        m += lf(1, t)
    for t in tags:
        m += lf(2, t)
    return m


def condition(items, after=0):  # AppendCondition
    m = b""
    for i in items:
        m += lf(1, i)
    if after:
        m += vf(2, after)
    return m


def append(stream, events, stream_type="", kind=0, version=0, cond=None):
    m = lf(1, stream) if stream else b""
    if stream_type:
        m += lf(2, stream_type)
    if kind:
        m += vf(3, kind)
    if version:
        m += vf(4, version)
    for e in events:
        m += lf(5, e)
    if cond is not None:
        m += lf(6, cond)
    return m


def many(appends, cond=None):  # AppendManyRequest
    m = b""
    for a in appends:
        m += lf(1, a)
    if cond is not None:
        m += lf(2, cond)
    return m


def filt(prefix="", types=(), items=()):
    m = lf(1, prefix) if prefix else b""
    for t in types:
        m += lf(2, t)
    for i in items:
        m += lf(3, i)
    return m


ID1 = "01900000-0000-7000-8000-000000000001"  # prefilled by fuzz_append
ID2 = "01900000-0000-7000-8000-000000000002"
ID3 = "01900000-0000-7000-8000-0000000000a3"

APPEND = {
    "minimal": append("order-9", [event()]),
    "full": append("order-9", [event(ID3, "Created", 2, "application/json", b'{"a":1}',
                                     [("tenant", "t1"), ("user", "u")], "corr", "cause",
                                     1700000000000)], "Order", 3, 0),
    "two_events": append("order-9", [event(event_type="A"), event(event_type="B")], kind=1),
    "duplicate_prefill": append("order-1", [event(ID1, "Created"), event(ID2, "Shipped")]),
    "prefix_of_batch": append("order-1", [event(ID1, "Created")]),
    "type_mismatch": append("order-1", [event()], "Invoice"),
    "exact_version": append("order-1", [event()], "", 3, 2),
    "wrong_version": append("order-1", [event()], "", 3, 7),
    "stream_exists": append("order-2", [event()], "", 2),
    "dup_ids_in_request": append("order-9", [event(ID3), event(ID3)]),
    "dup_metadata_keys": append("order-9", [event(metadata=[("k", "1"), ("k", "2"), ("j", "")])]),
    "bad_uuid_upper": append("order-9", [event(ID3.upper())]),
    "bad_utf8": append("order-\xff".encode("latin-1").decode("latin-1"), [event()]),
    "control_char": append("order\x01", [event()]),
    "nul_in_type": append("order-9", [event(event_type="Cre\x00ated")]),
    "empty_type": append("order-9", [event(event_type="")]),
    "no_events": append("order-9", []),
    "unknown_kind": append("order-9", [event()], "", 9),
    "unicode": append("ör-ünïcode-ストリーム", [event(event_type="Créé", content_type="text/plain; charset=utf-8")]),
    "tags": append("order-9", [event(tags=["course:c1", "student:s1"]), event(tags=["x"])]),
    "tag_empty": append("order-9", [event(tags=["ok", ""])]),
    "tag_twice": append("order-9", [event(tags=["a", "a"])]),
    "tag_control": append("order-9", [event(tags=["a\x01"])]),
    "condition_passes": append("order-9", [event(tags=["order:9"])],
                               cond=condition([item(tags=["order:9"])])),
    "condition_fails": append("order-1", [event()], cond=condition([item(["Created"])])),
    "condition_after": append("order-1", [event()], cond=condition([item(["Created"])], 1)),
    "condition_no_items": append("order-9", [event()], cond=condition([])),
    "condition_after_max": append("order-1", [event()],
                                  cond=condition([item(["Created"]), item(tags=["x"])],
                                                 (1 << 64) - 1)),
    "condition_empty_item": append("order-9", [event()], cond=condition([item()], 2)),
    "condition_retry_prefill": append("order-1", [event(ID1, "Created"), event(ID2, "Shipped")],
                                      cond=condition([item()])),
    "empty": b"",
}
# bad_utf8 above went through str; make it real invalid bytes.
APPEND["bad_utf8"] = lf(1, b"order-\xff") + lf(5, event())

STREAM = {
    "forward": lf(1, "order-1"),
    "backward": lf(1, "order-1") + vf(4, 1),
    "from_2_count_1": lf(1, "order-1") + vf(2, 2) + vf(3, 1),
    "beyond_end": lf(1, "order-1") + vf(2, 100),
    "backward_beyond": lf(1, "order-1") + vf(2, 100) + vf(4, 1),
    "huge_count": lf(1, "customer-1") + vf(3, 0xFFFFFFFF),
    "max_version": lf(1, "order-2") + vf(2, (1 << 64) - 1) + vf(4, 1),
    "missing": lf(1, "nope"),
    "bad_direction": lf(1, "order-1") + vf(4, 7),
    "empty": b"",
}
ALL = {
    "forward": b"",
    "backward": vf(3, 1),
    "from_5": vf(1, 5) + vf(2, 2),
    "prefix": lf(4, filt("order-")),
    "types": lf(4, filt("", ["Created", "Renamed"])),
    "both": lf(4, filt("order-", ["Shipped"])) + vf(3, 1),
    "no_match": lf(4, filt("zzz")),
    "max_position": vf(1, (1 << 64) - 1) + vf(3, 1),
    "empty_type_in_filter": lf(4, filt("", [""])),
    "items_tag": lf(4, filt(items=[item(tags=["s:order-1"])])),
    "items_tag_backward": lf(4, filt(items=[item(tags=["s:order-1"])])) + vf(3, 1),
    "items_types_and_tags": lf(4, filt(items=[item(["Created"], ["s:order-2"]),
                                               item([], ["t:Renamed"])])),
    "items_empty_item": lf(4, filt("order-", items=[item()])),
    "items_types_only": lf(4, filt(items=[item(["Paid", "Renamed"])])),
    "items_unknown_tag": lf(4, filt(items=[item([], ["s:order-1", "nope"])])) + vf(1, 3),
}
SUB = {
    "from_start": b"",
    "from_4": vf(1, 4),
    "from_end": vf(3, 1),
    "filtered": lf(2, filt("order-", ["Created"])) + vf(4, 1),
    "types_only": lf(2, filt("", ["Paid"])),
    "beyond_head": vf(1, 1000),
    "bad_filter": lf(2, filt("a\x01")),
    "items": lf(2, filt(items=[item(tags=["t:Created"]), item(["Renamed"])])) + vf(4, 1),
    "items_from_end": lf(2, filt(items=[item(tags=["s:order-2"])])) + vf(3, 1),
}
MANY = {
    "two_streams": many([append("a", [event(tags=["t"])]), append("b", [event()])]),
    "same_stream_exact": many([append("a", [event(), event()]),
                               append("a", [event()], "", 3, 2)]),
    "middle_fails": many([append("a", [event()]), append("order-1", [event()], "", 1),
                          append("c", [event()])]),
    "type_sticks": many([append("n", [event()], "Course"), append("n", [event()], "Student")]),
    "condition_passes": many([append("a", [event(tags=["order:1"])])],
                             condition([item(tags=["order:1"])], 2)),
    "condition_fails": many([append("a", [event()])], condition([item(tags=["order:1"])])),
    # after + 1 wrapped to 0 and matched the whole log (found by a test).
    "condition_after_max": many([append("a", [event()])],
                                condition([item(tags=["order:1"]), item(["Created"])],
                                          (1 << 64) - 1)),
    "condition_own_events": many([append("a", [event(tags=["new"])])],
                                 condition([item(tags=["new"])])),
    "retry_ids": many([append("a", [event(ID3, tags=["t"])]),
                       append("b", [event("01900000-0000-7000-8000-0000000000b4")])]),
    "reuse_prefill": many([append("x", [event()]), append("order-1", [event(ID1, "Created"),
                                                                        event(ID2, "Shipped")])]),
    "dup_id_across": many([append("a", [event(ID3)]), append("b", [event(ID3)])]),
    "own_condition": many([append("a", [event()], cond=condition([item()]))]),
    # A retry of the prefilled append whose other fields differ: a duplicate
    # by its ids (found by fuzzing: the check read back fields of a duplicate).
    "retry_prefill_other_fields": many([append("order-1", [event(ID1, "Created"),
                                                          event(ID2, "Shippe;")])]),
    "no_appends": b"",
    "empty_append": many([append("a", [])]),
}
REFLECTION = {
    "list": lf(1, "localhost") + lf(7, "*"),
    "by_name": lf(3, "eventstore/v1/eventstore.proto"),
    "by_symbol": lf(4, "eventstore.v1.EventStore"),
    "symbol_prefix_only": lf(4, "eventstore.v1."),
    "symbol_method": lf(4, "eventstore.v1.EventStore.Append"),
    "symbol_map_entry_field": lf(4, "eventstore.v1.RecordedEvent.MetadataEntry.key"),
    "symbol_enum_value": lf(4, "eventstore.v1.FORWARD"),
    "symbol_oneof": lf(4, "eventstore.v1.SubscribeResponse.message"),
    "symbol_package": lf(4, "grpc.reflection"),
    "symbol_made_up": lf(4, "eventstore.v1.Nope"),
    "not_found": lf(4, "nope.Thing"),
    "extension": lf(5, lf(1, "eventstore.v1.EventData") + vf(2, 100)),
    "ext_numbers": lf(6, "eventstore.v1.EventData"),
    "empty": b"",
}


def write(target, seeds, prefix=b""):
    d = os.path.join(HERE, "corpus", target)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for name, data in seeds.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(prefix + data)


def main():
    write("fuzz_append", APPEND)
    write("fuzz_append_many", MANY)
    # fuzz_read: first byte selects the request (mod 3).
    d = os.path.join(HERE, "corpus", "fuzz_read")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for sel, group, seeds in ((0, "stream", STREAM), (1, "all", ALL), (2, "sub", SUB)):
        for name, data in seeds.items():
            with open(os.path.join(d, f"{group}_{name}"), "wb") as f:
                f.write(bytes([sel]) + data)
    write("fuzz_validate", {
        "ascii": b"order-1",
        "uuid": ID3.encode(),
        "uuid_upper": ID3.upper().encode(),
        "uuid_long": (ID3 + "0").encode(),
        "uuid_nul": ID3.encode()[:10] + b"\x00" + ID3.encode()[11:],
        "utf8_2_3_4": "é€𝄞".encode(),
        "overlong": b"\xc0\xaf\xe0\x80\xaf",
        "surrogate": b"\xed\xa0\x80",
        "above_max": b"\xf4\x90\x80\x80",
        "truncated": b"ab\xe2\x82",
        "c1_control": b"x\xc2\x85y",
        "del": b"\x7f",
        "empty": b"",
    })
    write("fuzz_reflection", REFLECTION)


if __name__ == "__main__":
    main()

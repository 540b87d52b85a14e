// The checked-in stubs (src/gen/) must be exactly what //sdks/ts:stubs generates.
// ES_STUBS_TS is the Bazel output (set by //sdks/ts:test, or by test.sh after
// building the target); regenerate with sdks/ts/gen.sh.
//
// Without ES_STUBS_TS the test fails: a silent skip would let stale stubs pass.
// The one exception is a run by hand with ES_SKIP_BAZEL=1 (test.sh without
// Bazel), never under `bazel test` (TEST_SRCDIR is set there).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import * as path from "node:path";
import { it } from "node:test";
import { PKG_ROOT } from "./helpers";

const generated = process.env.ES_STUBS_TS;
const skipByHand = !generated && process.env.ES_SKIP_BAZEL === "1" && !process.env.TEST_SRCDIR;

it(
  "src/gen/ matches the output of //sdks/ts:stubs",
  { skip: skipByHand ? "ES_SKIP_BAZEL=1: the stubs were not built" : false },
  () => {
    assert.ok(
      generated,
      "ES_STUBS_TS is not set: run through test.sh or bazel test //sdks/ts:test (ES_SKIP_BAZEL=1 skips this check by hand)",
    );
    const checkedIn = readFileSync(path.join(PKG_ROOT, "src/gen/eventstore/v1/eventstore.ts"), "utf8");
    const fromBazel = readFileSync(path.resolve(generated), "utf8");
    assert.ok(
      checkedIn === fromBazel,
      "sdks/ts/src/gen/eventstore/v1/eventstore.ts differs from //sdks/ts:stubs: run sdks/ts/gen.sh",
    );
  },
);

// The checked-in stubs (src/gen/) must be exactly what //sdks/ts:stubs generates.
// ES_STUBS_TS is the Bazel output (set by //sdks/ts:test, or by test.sh after
// building the target); regenerate with sdks/ts/gen.sh.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import * as path from "node:path";
import { it } from "node:test";
import { PKG_ROOT } from "./helpers";

const generated = process.env.ES_STUBS_TS;

it(
  "src/gen/ matches the output of //sdks/ts:stubs",
  { skip: generated ? false : "ES_STUBS_TS is not set (run through test.sh or bazel test //sdks/ts:test)" },
  () => {
    const checkedIn = readFileSync(path.join(PKG_ROOT, "src/gen/eventstore/v1/eventstore.ts"), "utf8");
    const fromBazel = readFileSync(path.resolve(generated!), "utf8");
    assert.ok(
      checkedIn === fromBazel,
      "sdks/ts/src/gen/eventstore/v1/eventstore.ts differs from //sdks/ts:stubs: run sdks/ts/gen.sh",
    );
  },
);

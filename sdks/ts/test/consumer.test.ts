// The example, run in the repository and — the consumer test — from the packed
// npm tarball installed into a throwaway project outside the repository.
// The tarball is ES_TS_PACKAGE, the package of //sdks/ts:dist (what `make
// sdk-dist` ships; test.sh and Bazel set it). Without it (a run by hand with
// ES_SKIP_BAZEL=1) the test packs dist/ itself, with --ignore-scripts so that
// the build is not repeated. Dependencies come from the npm cache that
// setup.sh filled (--prefer-offline), the registry otherwise.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { promisify } from "node:util";
import { after, before, it } from "node:test";
import { PKG_ROOT, TestServer } from "./helpers";

const run = promisify(execFile);
const NPM = process.platform === "win32" ? "npm.cmd" : "npm";

let server: TestServer;
let work: string;

before(async () => {
  server = await TestServer.start();
  work = mkdtempSync(path.join(tmpdir(), "es-ts-consumer-"));
});

after(async () => {
  await server?.stop();
  if (work && !process.env.ES_KEEP_CONSUMER) rmSync(work, { recursive: true, force: true });
});

// Compiles only if every optional field of every options type accepts an explicit `undefined`
// (`field?: T | undefined`) under exactOptionalPropertyTypes.
const OPTIONS_TS = `import type * as es from "@eventstore-c/client";
type OptionalKeys<T> = { [K in keyof T]-?: {} extends Pick<T, K> ? K : never }[keyof T];
type TakesUndefined<T> = { [K in OptionalKeys<T>]: undefined } extends Pick<T, OptionalKeys<T>> ? true : false;
export const everyOptionalFieldTakesUndefined: [
  TakesUndefined<es.EventStoreClientOptions>,
  TakesUndefined<es.TlsOptions>,
  TakesUndefined<es.CallOptions>,
  TakesUndefined<es.AppendOptions>,
  TakesUndefined<es.ReadStreamOptions>,
  TakesUndefined<es.ReadStreamIterOptions>,
  TakesUndefined<es.ReadAllOptions>,
  TakesUndefined<es.ReadAllIterOptions>,
  TakesUndefined<es.EventInput>,
  TakesUndefined<es.JsonEventOptions>,
  TakesUndefined<es.Filter>,
  TakesUndefined<es.RetryOptions>,
  TakesUndefined<es.SubscribeOptions>,
] = [true, true, true, true, true, true, true, true, true, true, true, true, true];
const unset: string | undefined = undefined;
export const read: es.ReadStreamOptions = { maxCount: undefined, direction: undefined, deadlineMs: undefined };
export const event: es.EventInput = { eventType: "E", eventId: unset, metadata: undefined };
`;

function checkQuickstartOutput(stdout: string): void {
  assert.match(stdout, /appended order-\d+ v1\.\.v2/);
  assert.match(stdout, /read +v2 OrderPaid \{"amount":42\}/);
  assert.match(stdout, /caught up at/);
  assert.match(stdout, /received @\d+ OrderShipped/);
  assert.match(stdout, /quickstart: ok/);
}

it("the example runs in the repository", async () => {
  const js = path.join(PKG_ROOT, "build/examples/quickstart.js");
  const { stdout } = await run(process.execPath, [js], {
    env: { ...process.env, ES_ADDRESS: server.address },
    timeout: 30_000,
  });
  checkQuickstartOutput(stdout);
});

it("npm pack → install into a project outside the repository → its example runs", async () => {
  assert.ok(existsSync(path.join(PKG_ROOT, "dist/index.d.ts")), "dist/ is not built: run npm run build first");
  // test.sh runs the suite in a copy of sdks/ts and says where the original is.
  const repo = path.resolve(process.env.ES_TS_SOURCE_DIR ?? PKG_ROOT, "../..");
  assert.ok(path.relative(repo, work).startsWith(".."), `${work} is outside the repository`);

  // 1. the package: //sdks/ts:dist's, or packed here
  let tarball: string;
  if (process.env.ES_TS_PACKAGE) {
    tarball = "eventstore-c-client.tgz";
    copyFileSync(path.resolve(process.env.ES_TS_PACKAGE), path.join(work, tarball));
  } else {
    const packed = await run(NPM, ["pack", "--ignore-scripts", "--json", "--pack-destination", work], {
      cwd: PKG_ROOT,
      timeout: 60_000,
    });
    tarball = (JSON.parse(packed.stdout) as { filename: string }[])[0]!.filename;
  }
  const listed = await run("tar", ["-tzf", path.join(work, tarball)], { timeout: 30_000 });
  const files = listed.stdout.split("\n").filter(Boolean).map((f) => f.replace(/^package\//, ""));
  const need = ["package.json", "README.md", "LICENSE", "dist/index.js", "dist/index.d.ts", "dist/gen/eventstore/v1/eventstore.d.ts", "examples/quickstart.ts", "examples/enrolment.ts"];
  if (process.env.ES_TS_PACKAGE) need.push("API.md");
  for (const f of need) {
    assert.ok(files.includes(f), `the tarball has ${f}`);
  }
  assert.ok(!files.some((f) => f.startsWith("test/") || f.startsWith("build/") || f.startsWith("node_modules/")));

  // 2. a throwaway project that depends on the tarball
  const lock = JSON.parse(readFileSync(path.join(PKG_ROOT, "package-lock.json"), "utf8")) as {
    packages: Record<string, { version: string }>;
  };
  const pinned = (name: string) => lock.packages[`node_modules/${name}`]!.version;
  writeFileSync(
    path.join(work, "package.json"),
    JSON.stringify(
      {
        name: "es-consumer",
        private: true,
        dependencies: { "@eventstore-c/client": `file:./${path.basename(tarball)}` },
        devDependencies: { typescript: pinned("typescript"), "@types/node": pinned("@types/node") },
      },
      null,
      2,
    ),
  );
  writeFileSync(
    path.join(work, "tsconfig.json"),
    JSON.stringify({
      compilerOptions: {
        target: "ES2022",
        module: "node16",
        moduleResolution: "node16",
        strict: true,
        exactOptionalPropertyTypes: true,
        types: ["node"],
      },
      files: ["quickstart.ts", "options.ts"],
    }),
  );
  await run(NPM, ["install", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error"], {
    cwd: work,
    timeout: 120_000,
  });

  // 3. the example as shipped in the package, type-checked and compiled against it, with
  // exactOptionalPropertyTypes: a project with that setting passes `undefined` for options
  // it does not set (options.ts), which compiles only if each optional field says so.
  const installed = path.join(work, "node_modules/@eventstore-c/client");
  writeFileSync(path.join(work, "quickstart.ts"), readFileSync(path.join(installed, "examples/quickstart.ts")));
  writeFileSync(path.join(work, "options.ts"), OPTIONS_TS);
  const manifest = JSON.parse(readFileSync(path.join(installed, "package.json"), "utf8")) as { license: string };
  assert.equal(manifest.license, "Apache-2.0");
  // The README must not point into the repository (../../docs/…): those links are dead in a package.
  const readme = readFileSync(path.join(installed, "README.md"), "utf8");
  assert.deepEqual(readme.match(/\]\(\.\.\/[^)]*\)/g) ?? [], [], "the packaged README links outside the package");
  await run(process.execPath, [path.join(work, "node_modules/typescript/bin/tsc"), "-p", work], { timeout: 120_000 });

  // 4. run it against the server
  const { stdout } = await run(process.execPath, [path.join(work, "quickstart.js")], {
    cwd: work,
    env: { ...process.env, ES_ADDRESS: server.address },
    timeout: 30_000,
  });
  checkQuickstartOutput(stdout);
});

// Test support: a real eventstore server as a child process, and small utilities.
import { ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { EventStoreClient, EventStoreClientOptions } from "../src";

/** sdks/ts (the tests run from build/test/). */
export const PKG_ROOT = path.resolve(__dirname, "..", "..");

/** The server binary: $ES_SERVER_BIN, default ../../bazel-bin/server/eventstore from sdks/ts. */
export const SERVER_BIN = process.env.ES_SERVER_BIN
  ? path.resolve(process.env.ES_SERVER_BIN)
  : path.resolve(PKG_ROOT, "../../bazel-bin/server/eventstore");

const running = new Set<ChildProcess>();
process.on("exit", () => {
  for (const p of running) p.kill("SIGKILL");
});

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `cond` every 10 ms until it holds, or throws after `timeoutMs`. */
export async function waitFor(cond: () => boolean, timeoutMs = 5000, what = "condition"): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

/** A free loopback TCP port (bound and released). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const addr = s.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      s.close(() => resolve(port));
    });
  });
}

/** A real eventstore server (in-memory backend) on 127.0.0.1. */
export class TestServer {
  private exited: Promise<number | null>;
  private exitCode: number | null | undefined;

  private constructor(
    readonly proc: ChildProcess,
    readonly port: number,
    private readonly stderr: { text: string },
  ) {
    this.exited = new Promise((resolve) => {
      proc.once("exit", (code, signal) => {
        running.delete(proc);
        this.exitCode = code ?? (signal ? -1 : null);
        resolve(code);
      });
    });
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  get log(): string {
    return this.stderr.text;
  }

  /** Starts a server on `port` (default: a free one chosen by the server) and waits until it serves. */
  static async start(port = 0, extraArgs: string[] = []): Promise<TestServer> {
    if (!existsSync(SERVER_BIN)) {
      throw new Error(`server binary ${SERVER_BIN} not found: build //server:eventstore or set ES_SERVER_BIN`);
    }
    const dir = mkdtempSync(path.join(tmpdir(), "es-ts-test-"));
    const portFile = path.join(dir, "port");
    const args = [
      "--backend",
      "memory",
      "--bind",
      `127.0.0.1:${port}`,
      "--port-file",
      portFile,
      "--log-level",
      "warn",
      "--shutdown-grace-ms",
      "1000",
      ...extraArgs,
    ];
    const proc = spawn(SERVER_BIN, args, { stdio: ["ignore", "ignore", "pipe"] });
    running.add(proc);
    const stderr = { text: "" };
    proc.stderr?.on("data", (d: Buffer) => (stderr.text += d.toString()));
    let early: Error | undefined;
    proc.once("error", (e) => (early = e));
    proc.once("exit", (code, signal) => (early ??= new Error(`server exited early (code ${code}, signal ${signal})`)));
    const end = Date.now() + 10_000;
    try {
      for (;;) {
        if (early) throw early;
        if (existsSync(portFile)) {
          const text = readFileSync(portFile, "utf8").trim();
          if (/^[0-9]+$/.test(text)) {
            const server = new TestServer(proc, Number(text), stderr);
            if (port !== 0 && server.port !== port) throw new Error(`server bound ${server.port}, not ${port}`);
            return server;
          }
        }
        if (Date.now() > end) throw new Error("server did not write its port file within 10 s");
        await sleep(10);
      }
    } catch (err) {
      proc.kill("SIGKILL");
      await sleep(50);
      throw new Error(`${(err as Error).message}\n${stderr.text}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  /** Restarts on the same port after a stop (tries for a few seconds if the port is not free yet). */
  static async startOnPort(port: number): Promise<TestServer> {
    let lastErr: unknown;
    for (let i = 0; i < 50; i++) {
      try {
        return await TestServer.start(port);
      } catch (err) {
        lastErr = err;
        await sleep(100);
      }
    }
    throw lastErr;
  }

  /** Sends `signal` and waits for the process to exit. */
  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<number | null> {
    if (this.exitCode === undefined) {
      this.proc.kill(signal);
      const timer = setTimeout(() => this.proc.kill("SIGKILL"), 10_000);
      try {
        return await this.exited;
      } finally {
        clearTimeout(timer);
      }
    }
    return this.exitCode;
  }

  client(extra: Partial<EventStoreClientOptions> = {}): EventStoreClient {
    return new EventStoreClient({ address: this.address, defaultDeadlineMs: 10_000, ...extra });
  }
}

let counter = 0;
/** A stream name unique within this process. */
export function uniqueStream(prefix = "s"): string {
  counter++;
  return `${prefix}-${process.pid}-${Date.now().toString(36)}-${counter}`;
}

/** Awaits `p` and returns what it rejected with (fails if it resolved). */
export async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error("expected the promise to reject, but it resolved");
}

/** Pulls up to `n` items from an async iterator, with a timeout for each. */
export async function take<T>(it: AsyncIterator<T>, n: number, timeoutMs = 10_000): Promise<T[]> {
  const out: T[] = [];
  for (let i = 0; i < n; i++) {
    let timer: NodeJS.Timeout | undefined;
    const r = await Promise.race([
      it.next(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out waiting for item ${i + 1} of ${n}`)), timeoutMs);
      }),
    ]).finally(() => clearTimeout(timer));
    if (r.done) break;
    out.push(r.value);
  }
  return out;
}

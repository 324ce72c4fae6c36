// Redis faults under load: two `serve` processes share one Redis (every resumption crosses servers,
// so it needs the store) while Redis is killed, restarted empty or with its AOF, paused (DEBUG
// SLEEP, SIGSTOP), made slow (a latency proxy) or replaced by a fake Redis answering garbage.
import {
  baseChecks,
  type FaultContext,
  type FaultWindow,
  runLoad,
  type Scenario,
  type ScenarioOptions,
  type ScenarioReport,
  storeKey,
} from "./driver.js";
import {
  type ChaosRedis,
  type ProxyProcess,
  sleep,
  startChaosRedis,
  startRedisProxyProcess,
} from "./redis-faults.js";
import { fetchStats, type ServeProcess, startServe, storeSide } from "./serve-process.js";

interface Setup {
  redis: ChaosRedis;
  proxy?: ProxyProcess;
}

type Fault = (s: Setup, o: ScenarioOptions, ctx: FaultContext) => Promise<FaultWindow>;

function redisScenario(
  describe: string,
  fault: Fault,
  opts: { persist?: boolean; proxy?: boolean } = {},
): Scenario {
  return {
    family: "redis",
    describe,
    async run(o): Promise<ScenarioReport> {
      const redis = await startChaosRedis({ persist: opts.persist });
      const proxy = opts.proxy ? await startRedisProxyProcess(redis.port) : undefined;
      const serves: ServeProcess[] = [];
      try {
        const url = `redis://127.0.0.1:${proxy?.port ?? redis.port}`;
        const args = [
          "--store",
          url,
          "--store-key",
          storeKey(),
          "--lookup-timeout",
          String(o.lookupTimeoutMs),
        ];
        for (let i = 0; i < 2; i++) serves.push(await startServe(args));
        const setup: Setup = { redis, proxy };
        const result = await runLoad({
          ports: serves.map((s) => s.port),
          handshakes: o.handshakes,
          concurrency: o.concurrency,
          lookupTimeoutMs: o.lookupTimeoutMs,
          deadlineMs: o.deadlineMs,
          fault: (ctx) => fault(setup, o, ctx),
        });
        const stores = await Promise.all(serves.map(async (s) => storeSide(await fetchStats(s.port))));
        const crashed = await Promise.race([
          Promise.any(serves.map((s) => s.exit)).then(() => true),
          sleep(0).then(() => false),
        ]);
        return {
          scenario: "",
          setup: `2 × serve --store redis:// (${opts.proxy ? "through a proxy, " : ""}${opts.persist ? "appendonly yes" : "no persistence"}), --lookup-timeout ${o.lookupTimeoutMs}`,
          result,
          extra: {
            stores,
            ...(result.window.extra ?? {}),
            ...(proxy ? { garbageReplies: await proxy.garbageReplies() } : {}),
            serveStderrTail: o.verbose ? serves.map((s) => s.stderr().slice(-2000)) : undefined,
          },
          checks: { ...baseChecks(result), servesAlive: !crashed },
        };
      } finally {
        await Promise.all(serves.map((s) => s.stop()));
        await proxy?.close();
        await redis.stop();
      }
    },
  };
}

const at = (ctx: FaultContext) => ctx.now();

export const redisScenarios: Record<string, Scenario> = {
  baseline: redisScenario(
    "no fault (a window of --fault-ms with nothing done): the figures to compare with",
    async (_s, o, ctx) => {
      const startMs = at(ctx);
      await sleep(o.faultMs);
      return { fault: "none", startMs, endMs: at(ctx) };
    },
  ),
  "redis-kill": redisScenario(
    "Redis SIGKILLed, down for --fault-ms, then started again (empty)",
    async (s, o, ctx) => {
      const startMs = at(ctx);
      await s.redis.kill();
      await sleep(o.faultMs);
      await s.redis.restart(true);
      return { fault: `SIGKILL, down ${o.faultMs} ms, restarted empty`, startMs, endMs: at(ctx) };
    },
  ),
  "redis-restart-empty": redisScenario("Redis SIGKILLed and restarted at once, empty", async (s, _o, ctx) => {
    const startMs = at(ctx);
    await s.redis.restart(true);
    return { fault: "SIGKILL, restarted at once with no data", startMs, endMs: at(ctx) };
  }),
  "redis-restart-data": redisScenario(
    "Redis (appendonly yes, appendfsync always) SIGKILLed and restarted with its AOF",
    async (s, _o, ctx) => {
      const startMs = at(ctx);
      await s.redis.restart(false);
      const keys = Number((await s.redis.cli("dbsize")).trim());
      return {
        fault: "SIGKILL, restarted with its AOF",
        startMs,
        endMs: at(ctx),
        extra: { keysAfterRestart: keys },
      };
    },
    { persist: true },
  ),
  "redis-sleep": redisScenario("Redis blocked by DEBUG SLEEP for --fault-ms", async (s, o, ctx) => {
    const startMs = at(ctx);
    await s.redis.cli("debug", "sleep", String(o.faultMs / 1000));
    return { fault: `DEBUG SLEEP ${o.faultMs / 1000}`, startMs, endMs: at(ctx) };
  }),
  "redis-stop": redisScenario("Redis paused with SIGSTOP for --fault-ms, then SIGCONT", async (s, o, ctx) => {
    const startMs = at(ctx);
    s.redis.signal("SIGSTOP");
    await sleep(o.faultMs);
    s.redis.signal("SIGCONT");
    return { fault: `SIGSTOP ${o.faultMs} ms, SIGCONT`, startMs, endMs: at(ctx) };
  }),
  "redis-slow": redisScenario(
    "a proxy between serve and Redis adds --latency-ms each way for --fault-ms",
    async (s, o, ctx) => {
      const startMs = at(ctx);
      await s.proxy!.setLatency(o.latencyMs);
      await sleep(o.faultMs);
      await s.proxy!.setLatency(0);
      // Replies queued behind the latency still arrive late: the window ends when they are out.
      await sleep(o.latencyMs);
      return { fault: `+${o.latencyMs} ms each way for ${o.faultMs} ms`, startMs, endMs: at(ctx) };
    },
    { proxy: true },
  ),
  "redis-garbage": redisScenario(
    "Redis replaced by a fake RESP server answering random bytes and wrong types for --fault-ms",
    async (s, o, ctx) => {
      const startMs = at(ctx);
      await s.proxy!.setMode("garbage");
      await sleep(o.faultMs);
      await s.proxy!.setMode("forward");
      return { fault: `garbage answers for ${o.faultMs} ms`, startMs, endMs: at(ctx) };
    },
    { proxy: true },
  ),
};

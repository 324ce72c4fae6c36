// A Redis Cluster (3 primaries + 3 replicas, cluster-node-timeout 1 s) losing a primary under load:
// two `serve --store redis-cluster://...` share it; one primary is SIGKILLed and its replica takes
// over. The fault window runs from the kill until every live node says cluster_state:ok again.
import { baseChecks, runLoad, type Scenario, storeKey } from "./driver.js";
import { sleep, startChaosCluster } from "./redis-faults.js";
import { fetchStats, type ServeProcess, startServe, storeSide } from "./serve-process.js";

const failover: Scenario = {
  family: "redis-cluster",
  describe: "Redis Cluster (3 primaries + 3 replicas) loses a primary (SIGKILL); its replica takes over",
  async run(o) {
    const cluster = await startChaosCluster(1000);
    const serves: ServeProcess[] = [];
    try {
      const args = [
        "--store",
        `redis-cluster://${cluster.seeds.join(",")}`,
        "--store-key",
        storeKey(),
        "--lookup-timeout",
        String(o.lookupTimeoutMs),
      ];
      for (let i = 0; i < 2; i++) serves.push(await startServe(args));
      let victimPort = 0;
      const result = await runLoad({
        ports: serves.map((s) => s.port),
        handshakes: o.handshakes,
        concurrency: o.concurrency,
        lookupTimeoutMs: o.lookupTimeoutMs,
        deadlineMs: o.deadlineMs,
        async fault(ctx) {
          const primaries = await cluster.primaryPorts();
          victimPort = primaries[0]!;
          const victim = cluster.nodes.find((n) => n.port === victimPort)!;
          // Redis replicates asynchronously: a failover loses what the replica had not received,
          // and the reserve is the newest sessions. Let the replica reach the offset the primary
          // has now (bounded), so "written before the failover" means on the replica too.
          const offset = (info: string, field: string) =>
            Number(new RegExp(`${field}:(\\d+)`).exec(info)?.[1] ?? -1);
          const target = offset(await victim.cli("info", "replication"), "master_repl_offset");
          const infos = await Promise.all(
            cluster.nodes.map((n) => n.cli("info", "replication").catch(() => "")),
          );
          const replica = cluster.nodes[infos.findIndex((i) => i.includes(`master_port:${victimPort}`))];
          const synced = Date.now() + 5000;
          while (replica && Date.now() < synced) {
            if (offset(await replica.cli("info", "replication"), "slave_repl_offset") >= target) break;
            await sleep(10);
          }
          const startMs = ctx.now();
          await victim.kill();
          const others = cluster.nodes.filter((n) => n !== victim);
          // Failover done: the survivors see the victim failed and the cluster ok again.
          const deadline = Date.now() + 60_000;
          for (;;) {
            const infos = await Promise.all(others.map((n) => n.cli("cluster", "info").catch(() => "")));
            const nodes = await others[0]!.cli("cluster", "nodes").catch(() => "");
            const victimFailed = nodes
              .split("\n")
              .some((l) => l.includes(`:${victimPort}@`) && /fail\b/.test(l) && !/fail\?/.test(l));
            if (victimFailed && infos.every((i) => i.includes("cluster_state:ok"))) break;
            if (Date.now() > deadline) break;
            await sleep(50);
          }
          const endMs = ctx.now();
          return {
            fault: "SIGKILL of one primary; failover to its replica",
            startMs,
            endMs,
            extra: { failoverMs: Math.round(endMs - startMs) },
          };
        },
      });
      const stores = await Promise.all(serves.map(async (s) => storeSide(await fetchStats(s.port))));
      return {
        scenario: "",
        setup: `2 × serve --store redis-cluster:// (3 primaries + 3 replicas, cluster-node-timeout 1000), --lookup-timeout ${o.lookupTimeoutMs}`,
        result,
        extra: { stores, ...(result.window.extra ?? {}) },
        checks: baseChecks(result),
      };
    } finally {
      await Promise.all(serves.map((s) => s.stop()));
      await cluster.stop();
    }
  },
};

export const clusterScenarios: Record<string, Scenario> = { "redis-cluster-failover": failover };

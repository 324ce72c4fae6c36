// The package as users get it: `npm pack` ships dist, bin, README and LICENSE only; the tarball
// installs into a fresh project (offline, from npm's cache), imports as ESM, type-checks with its
// own .d.ts, and its `sesscache` command runs. Needs a build (`npm run build`; CI builds first).
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), "sesscache-package-"));
after(() => rmSync(tmp, { recursive: true, force: true }));
const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { name: string; version: string };

/**
 * The environment without the npm_* variables `npm test` sets: an `npm_config_prefix` or
 * `npm_config_local_prefix` inherited from the outer npm would make the inner one install into
 * this repository instead of the fresh project.
 */
const env = Object.fromEntries(
  Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k)),
) as NodeJS.ProcessEnv;
env.NO_UPDATE_NOTIFIER = "1";
env.npm_config_update_notifier = "false";

function run(
  cmd: string,
  args: string[],
  cwd: string,
  timeout = 30_000,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { cwd, env, timeout, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
      resolve({ code, stdout, stderr: err && !stderr ? String(err.message) : stderr });
    });
  });
}

const npm = process.platform === "win32" ? "npm.cmd" : "npm";

describe("the npm package", { timeout: 120_000 }, () => {
  let tarball = "";
  let files: string[] = [];
  before(async () => {
    assert.ok(existsSync(join(root, "dist/index.js")), "dist/ is missing: run `npm run build` first");
    const packDir = join(tmp, "pack");
    mkdirSync(packDir);
    // --ignore-scripts: no "prepare" rebuild here; the tested build is the one in dist/.
    const r = await run(npm, ["pack", "--pack-destination", packDir, "--json", "--ignore-scripts"], root);
    assert.equal(r.code, 0, r.stderr);
    const [info] = JSON.parse(r.stdout) as [{ filename: string; files: { path: string }[] }];
    tarball = join(packDir, info.filename);
    files = info.files.map((f) => f.path).sort();
  });

  test("ships dist, bin, README and LICENSE, and nothing of the sources, tests or benchmarks", () => {
    for (const f of ["dist/index.js", "dist/index.d.ts", "dist/cli/main.js", "bin/sesscache.js"]) {
      assert.ok(files.includes(f), `${f} in ${files.join(", ")}`);
    }
    for (const f of ["README.md", "LICENSE", "package.json"]) assert.ok(files.includes(f), f);
    const top = new Set(files.map((f) => f.split("/")[0]));
    assert.deepEqual([...top].sort(), ["LICENSE", "README.md", "bin", "dist", "package.json"]);
    const stray = files.filter(
      (f) =>
        /\.test\.|\.tsbuildinfo$|(^|\/)(test|bench|src)\//.test(f) ||
        (f.endsWith(".ts") && !f.endsWith(".d.ts")),
    );
    assert.deepEqual(stray, []);
    assert.match(
      readFileSync(join(root, "LICENSE"), "utf8"),
      /^MIT License\n\nCopyright \(c\) .* sesscache contributors/,
    );
  });

  test("installs into a fresh project offline, imports as ESM with types, runs its command", async () => {
    const app = join(tmp, "app");
    mkdirSync(app);
    writeFileSync(
      join(app, "package.json"),
      JSON.stringify({ name: "sesscache-package-test", version: "1.0.0", private: true, type: "module" }),
    );
    const flags = ["--no-audit", "--no-fund", "--ignore-scripts", "--no-save", "--loglevel=error"];
    // Dependencies come from npm's cache (npm ci filled it); --prefer-offline if one is missing there.
    let r = await run(npm, ["install", "--offline", ...flags, tarball], app, 45_000);
    if (r.code !== 0) r = await run(npm, ["install", "--prefer-offline", ...flags, tarball], app, 45_000);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(existsSync(join(app, "node_modules/sesscache/dist/index.js")));

    const esm = await run(
      process.execPath,
      [
        "--input-type=module",
        "-e",
        "import { SessionCache } from 'sesscache';" +
          "const c = new SessionCache({ cacheSize: 10 });" +
          "console.log(JSON.stringify({ hits: c.stats().hits, size: c.getCacheSize() }));" +
          "c.close();",
      ],
      app,
    );
    assert.equal(esm.code, 0, esm.stderr);
    assert.deepEqual(JSON.parse(esm.stdout), { hits: 0, size: 10 });

    const cli = await run(join(app, "node_modules/.bin/sesscache"), ["--version"], app);
    assert.equal(cli.code, 0, cli.stderr);
    assert.equal(cli.stdout.trim(), pkg.version);

    writeFileSync(
      join(app, "check.ts"),
      [
        'import { SessionCache } from "sesscache";',
        "const cache: SessionCache = new SessionCache({ cacheSize: 10 });",
        "const hits: number = cache.stats().hits;",
        "// @ts-expect-error: the package's types are in force (hits is a number)",
        "const wrong: string = cache.stats().hits;",
        "export { hits, wrong };",
        "",
      ].join("\n"),
    );
    writeFileSync(
      join(app, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          target: "ES2022",
          module: "NodeNext",
          moduleResolution: "NodeNext",
          strict: true,
          noEmit: true,
          // Users have @types/node; the fresh project borrows this repository's.
          typeRoots: [join(root, "node_modules/@types")],
          types: ["node"],
        },
        files: ["check.ts"],
      }),
    );
    const tsc = await run(process.execPath, [join(root, "node_modules/typescript/bin/tsc"), "-p", app], app);
    assert.equal(tsc.code, 0, tsc.stdout + tsc.stderr);
  });
});

// The committed build (app/static/client.js and console.js, served by the Python package without Node) must be
// exactly what the sources build to; the npm package must hold the module and its type declarations.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const here = join(dirname(fileURLToPath(import.meta.url)), "..");

test("the committed app/static build is the build of clients/js (else: make js-build, and commit)", () => {
  const output = execFileSync(process.execPath, [join(here, "scripts", "build.mjs"), "--check"], {
    cwd: here,
    encoding: "utf8",
  });
  assert.match(output, /up to date/);
});

test("the sources type-check (client and console)", () => {
  const tsc = join(here, "node_modules", "typescript", "bin", "tsc");
  for (const project of ["tsconfig.json", "tsconfig.console.json"]) {
    execFileSync(process.execPath, [tsc, "--noEmit", "-p", project], { cwd: here, encoding: "utf8" });
  }
});

test("npm pack ships one ES module with its type declarations, and no runtime dependencies", () => {
  const packed = JSON.parse(execFileSync("npm", ["pack", "--dry-run", "--json"], { cwd: here, encoding: "utf8" }))[0];
  const files = packed.files.map((file) => file.path).sort();
  for (const needed of ["dist/index.js", "dist/index.d.ts", "dist/client.d.ts", "package.json", "README.md"]) {
    assert.ok(files.includes(needed), `${needed} missing from ${files.join(", ")}`);
  }
  assert.ok(files.every((path) => !path.startsWith("test/") && !path.startsWith("src/")), files.join(", "));
  const manifest = JSON.parse(execFileSync("npm", ["pkg", "get", "dependencies", "--json"], { cwd: here, encoding: "utf8" }));
  assert.deepEqual(manifest, {}); // only the optional MessagePack decoder, as an optional peer
});

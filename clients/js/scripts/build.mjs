// Builds the client: dist/ (the npm package: one ES module plus type declarations) and the copies the gateway
// serves without Node at run time (app/static/client.js, app/static/console.js), which are committed.
// `node scripts/build.mjs --check` builds in memory and fails when the committed copies are stale;
// `--dist` writes only dist/ (what `npm pack` ships).
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = dirname(dirname(fileURLToPath(import.meta.url)));
const repo = join(here, "..", "..");
const pkg = JSON.parse(readFileSync(join(here, "package.json"), "utf8"));
const STATIC = join(repo, "app", "static");
const banner = (what) =>
  `// ${what} ${pkg.version} -- generated from clients/js by \`make js-build\`; do not edit.`;

const common = { absWorkingDir: here, bundle: true, format: "esm", target: "es2020", platform: "neutral", write: false, charset: "utf8", legalComments: "none" };

async function outputs() {
  const client = await esbuild.build({
    ...common,
    entryPoints: [join(here, "src", "index.ts")],
    banner: { js: banner(pkg.name) },
    outfile: "client.js",
  });
  const console_ = await esbuild.build({
    ...common,
    entryPoints: [join(here, "console", "console.ts")],
    banner: { js: banner("eventcast console") },
    external: ["/client.js"], // the page loads the client the gateway serves, like any application would
    outfile: "console.js",
  });
  return {
    [join(STATIC, "client.js")]: client.outputFiles[0].text,
    [join(STATIC, "console.js")]: console_.outputFiles[0].text,
    [join(here, "dist", "index.js")]: client.outputFiles[0].text,
  };
}

const files = await outputs();
if (process.argv.includes("--check")) {
  const stale = Object.entries(files)
    .filter(([path]) => path.startsWith(STATIC))
    .filter(([path, text]) => {
      try {
        return readFileSync(path, "utf8") !== text;
      } catch {
        return true;
      }
    })
    .map(([path]) => relative(repo, path));
  if (stale.length > 0) {
    console.error(`stale build: ${stale.join(", ")} differ from clients/js sources; run \`make js-build\` and commit`);
    process.exit(1);
  }
  console.log("committed build is up to date");
} else {
  // --dist (npm pack's prepack): only the package's own files, never the committed copies under app/static.
  const distOnly = process.argv.includes("--dist");
  for (const [path, text] of Object.entries(files)) {
    if (distOnly && path.startsWith(STATIC)) continue;
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, text);
  }
  execFileSync(process.execPath, [join(here, "node_modules", "typescript", "bin", "tsc"), "-p", join(here, "tsconfig.json")], {
    stdio: "inherit",
  });
  const written = Object.keys(files).filter((p) => !(distOnly && p.startsWith(STATIC)));
  // stderr: `npm pack --json` prints its JSON on stdout after this
  console.error(`built ${written.map((p) => relative(repo, p)).join(", ")} and clients/js/dist/*.d.ts`);
}

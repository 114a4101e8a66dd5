#!/usr/bin/env node
// Validates rendered Kubernetes manifests against the kubernetes-models packages: each document
// is built as its model (ScaledObject, TriggerAuthentication, ServiceMonitor, PrometheusRule, and
// the core kinds too) and .validate() is called on it. Exits 1 on the first file with an error,
// after reporting every error in it; a kind without a model is an error, never skipped.
//
//   K8S_MODELS_MODULES=.tools/k8s-models/node_modules node .ci/k8s-models/validate.mjs FILE...
//
// The packages are installed by .ci/check-helm from package.json and package-lock.json beside
// this file (npm ci into .tools/k8s-models); K8S_MODELS_MODULES names that node_modules folder.

import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const modules = process.env.K8S_MODELS_MODULES ?? join(here, "node_modules");

// The packages are ESM with an "exports" map; they live outside this script's folder, so each
// module is imported by its file path under `modules`.
const load = (pkg, file) => import(pathToFileURL(join(modules, pkg, file)).href);

// Where the model of an API group lives. The core API (no group) is kubernetes-models/v1.
const PACKAGE_OF_GROUP = {
  "keda.sh": "@kubernetes-models/keda",
  "monitoring.coreos.com": "@kubernetes-models/prometheus-operator",
};

async function modelFor(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  const pkg = PACKAGE_OF_GROUP[group] ?? "kubernetes-models";
  const file = group ? `${group}/${version}/${kind}.js` : `${version}/${kind}.js`;
  try {
    const module = await load(pkg, file);
    if (typeof module[kind] !== "function") throw new Error(`no export ${kind}`);
    return { Model: module[kind], source: `${pkg}/${file}` };
  } catch (error) {
    if (error.code === "ERR_MODULE_NOT_FOUND") return null;
    throw error;
  }
}

function describe(error) {
  // kubernetes-models throws a ValidationError whose `errors` are ajv's.
  const details = (error.errors ?? []).map(
    (e) => `${e.instancePath || "/"} ${e.message}${e.params?.additionalProperty ? ` (${e.params.additionalProperty})` : ""}`,
  );
  return details.length ? details : [error.message];
}

async function main(files) {
  if (files.length === 0) {
    console.error("usage: validate.mjs FILE...");
    return 2;
  }
  const yaml = (await load("js-yaml", "dist/js-yaml.mjs")).default;
  let failed = 0;
  let checked = 0;
  for (const file of files) {
    const documents = yaml.loadAll(readFileSync(file, "utf8")).filter((d) => d != null);
    for (const document of documents) {
      const name = `${file}: ${document.kind}/${document.metadata?.name}`;
      if (!document.apiVersion || !document.kind) {
        console.error(`FAIL ${name}: no apiVersion or kind`);
        failed += 1;
        continue;
      }
      const found = await modelFor(document.apiVersion, document.kind);
      if (!found) {
        console.error(`FAIL ${name}: no model for ${document.apiVersion} ${document.kind}`);
        failed += 1;
        continue;
      }
      checked += 1;
      try {
        new found.Model(document).validate();
      } catch (error) {
        failed += 1;
        console.error(`FAIL ${name} (${found.source}):`);
        for (const line of describe(error)) console.error(`  ${line}`);
      }
    }
  }
  console.log(`kubernetes-models: ${checked} resources validated, ${failed} failed`);
  return failed ? 1 : 0;
}

process.exitCode = await main(process.argv.slice(2));

// fauxqs (an SNS/SQS emulator for Node.js) on loopback only, its request logger off.
//
// fauxqs's own entry points listen on every interface and log each request (which costs the
// broker CPU the benchmark would charge to the consumers); this builds its application and
// listens on 127.0.0.1. Usage: node bench/fauxqs_server.mjs PORT, with FAUXQS_APP set to the
// installed package's dist/app.js (python -m bench.brokers installs it under .tools/fauxqs).
import { pathToFileURL } from "node:url";

const port = Number.parseInt(process.argv[2], 10);
const { buildApp } = await import(pathToFileURL(process.env.FAUXQS_APP).href);
const app = buildApp({ logger: false });
await app.listen({ port, host: "127.0.0.1" });
process.stdout.write(`listening on http://127.0.0.1:${port}\n`);
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => app.close().then(() => process.exit(0)));
}

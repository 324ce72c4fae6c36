// Every fuzz target, by name.
import type { FuzzTarget } from "../harness.js";
import { cliArgsTarget } from "./cli-args.js";
import { clientHelloTarget } from "./client-hello.js";
import { clientHelloSocketTarget } from "./client-hello-socket.js";
import { sealedTarget } from "./sealed.js";
import { sessionTarget } from "./session.js";

export const TARGETS: readonly FuzzTarget[] = [
  clientHelloTarget,
  clientHelloSocketTarget,
  sessionTarget,
  sealedTarget,
  cliArgsTarget,
];

// The default clock: whole seconds since the epoch. Date.now() costs ~40 ns, a fifth of a cache
// hit, so the second is cached and re-read after 256 calls, or once an unref'd timer has fired
// (10 ms, or the next second boundary if sooner) so that an idle process never serves a stale
// value. While the event loop is blocked the value may lag by up to 256 calls; session times have
// a resolution of one second anyway.

let cached = -1;
let calls = 0;
let pending = false;

function forget(): void {
  cached = -1;
  pending = false;
}

export function coarseClock(): number {
  if (cached >= 0 && ++calls < 256) return cached;
  calls = 0;
  const ms = Date.now();
  cached = Math.floor(ms / 1000);
  if (!pending) {
    pending = true;
    // unref'd: the timer never keeps a process alive (optional call: mocked timers may lack it).
    setTimeout(forget, Math.min(10, 1000 - (ms % 1000)))?.unref?.();
  }
  return cached;
}

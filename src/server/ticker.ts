// A per-server interval that runs only while something waits on it: each call of `start()` makes
// sure it runs; `step` is called every `period` ms with the tick count and answers whether anything
// still waits (false stops the interval until the next `start()`).
export class Ticker {
  /** Ticks so far: deadlines are counted in them. */
  tick = 0;
  private timer: NodeJS.Timeout | undefined = undefined;

  constructor(
    readonly period: number,
    private readonly step: (tick: number) => boolean,
  ) {}

  start(): void {
    if (this.timer !== undefined) return;
    this.timer = setInterval(this.run, this.period);
    this.timer.unref();
  }

  private readonly run = (): void => {
    if (this.step(++this.tick)) return;
    clearInterval(this.timer);
    this.timer = undefined;
  };
}

// One 'abort' listener per AbortSignal, whatever the number of callers waiting on it. The server
// gives all the messages of a batch one processing budget signal, and every message's service call
// and Processor request listened on it: two EventTarget addEventListener/removeEventListener pairs
// per message, slow in Node (each removal scans the signal's listener list), ~3 % of a frontend's
// CPU under ingest. Callers here add and remove an entry of a Set instead.
const waiting = new WeakMap<AbortSignal, Set<() => void>>();

/**
 * Calls `fn` once when `signal` aborts (the caller checks `signal.aborted` first: an aborted signal
 * never calls it). Returns the function that takes `fn` off, to call when the work ends first.
 */
export function whenAborted(signal: AbortSignal, fn: () => void): () => void {
  let set = waiting.get(signal);
  if (!set) {
    const callbacks = new Set<() => void>();
    set = callbacks;
    waiting.set(signal, callbacks);
    signal.addEventListener(
      "abort",
      () => {
        waiting.delete(signal);
        for (const f of callbacks) {
          try {
            f();
          } catch (e) {
            // As EventTarget does with a listener's error: thrown later, the others still called.
            process.nextTick(() => {
              throw e;
            });
          }
        }
        callbacks.clear();
      },
      { once: true },
    );
  }
  const callbacks = set;
  callbacks.add(fn);
  return () => {
    callbacks.delete(fn);
  };
}

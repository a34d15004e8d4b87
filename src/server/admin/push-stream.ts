// Bridges a callback-driven producer (the store walking a result set) to the async iterable a
// server-streaming RPC returns, with bounded buffering: when the gRPC stream is slow to drain, the
// producer waits instead of filling memory; when the caller goes away, the producer's next push
// throws, which ends its walk.

export class StreamClosedError extends Error {
  override readonly name = "StreamClosedError";
}

export async function* pushStream<T>(
  produce: (push: (item: T) => Promise<void>) => Promise<void>,
  highWater = 256,
): AsyncGenerator<T> {
  const queue: T[] = [];
  let finished = false;
  let failure: unknown;
  let closed = false;
  let wakeConsumer: (() => void) | undefined;
  let wakeProducer: (() => void) | undefined;

  const push = async (item: T): Promise<void> => {
    if (closed) throw new StreamClosedError("the receiver closed the stream");
    queue.push(item);
    wakeConsumer?.();
    while (queue.length >= highWater && !closed) {
      await new Promise<void>((resolve) => {
        wakeProducer = resolve;
      });
    }
    if (closed) throw new StreamClosedError("the receiver closed the stream");
  };

  const producer = produce(push).then(
    () => {
      finished = true;
      wakeConsumer?.();
    },
    (err: unknown) => {
      finished = true;
      failure = err;
      wakeConsumer?.();
    },
  );

  try {
    for (;;) {
      if (queue.length > 0) {
        const item = queue.shift() as T;
        if (queue.length < highWater) {
          wakeProducer?.();
          wakeProducer = undefined;
        }
        yield item;
        continue;
      }
      if (finished) {
        if (failure !== undefined) throw failure;
        return;
      }
      await new Promise<void>((resolve) => {
        wakeConsumer = resolve;
      });
      wakeConsumer = undefined;
    }
  } finally {
    closed = true;
    wakeProducer?.();
    await producer;
  }
}

// Moving a tunnel's bytes from one socket to the other, with backpressure, in few system calls.
//
// stream.pipe() writes every chunk it is given the moment it arrives. From a TLS socket that is one
// decrypted record, at most 16 KiB: Node's TLS hands them to JavaScript one at a time, several per
// read of the network. Each then became its own write(2) to the backend, and on a fast link each
// write is a TCP segment pushed (TCP_NODELAY), a receive path run and the backend's thread woken —
// kernel work per write. Here the writes of one turn of the event loop are gathered (cork) and leave
// together when the turn's I/O is done (setImmediate): one writev(2) for all the records the reads
// of that turn yielded. Nothing waits for a timer; the bytes leave in the same turn of the loop.
//
// Backpressure as pipe(), but with a high-water mark of the relay's own (RELAY_HIGH_WATER_MARK): when
// the destination holds more than that unsent, the source is paused until the destination drains.
// A socket's own mark is Node's default of 16 KiB, one TLS record, so write() reports "full" for
// nearly every chunk (always for the 64 KiB a read of the backend yields): pipe() paused and resumed
// the source each time, two epoll_ctl calls per chunk.

import type { Readable, Writable } from 'node:stream';

/**
 * Bytes a destination may hold unsent before the relay pauses its source: how much may sit in the
 * gateway per direction of a tunnel (64 tunnels: at most 32 MiB both ways).
 */
export const RELAY_HIGH_WATER_MARK = 256 * 1024;

export interface RelayOptions {
  /**
   * Gather the writes of one turn of the event loop into one (cork, then uncork once the turn's
   * I/O is done). For a TLS socket's records into a plain socket; not the other way: a plain
   * socket's reads are 64 KiB already, and Node's TLS copies gathered writes into one buffer.
   */
  gather: boolean;
  /** Bytes `to` may hold unsent before `from` is paused; RELAY_HIGH_WATER_MARK by default. */
  highWaterMark?: number;
}

/**
 * Relays what `from` reads to `to`, and ends `to` when `from` ends (as pipe() does). Destroys
 * neither: the caller decides what a close means.
 */
export function relay(from: Readable, to: Writable, options: RelayOptions): void {
  const highWaterMark = options.highWaterMark ?? RELAY_HIGH_WATER_MARK;
  let corked = false;
  const flush = () => {
    corked = false;
    if (!to.destroyed) to.uncork();
  };
  const onData = (chunk: Buffer) => {
    if (options.gather && !corked) {
      corked = true;
      to.cork();
      setImmediate(flush);
    }
    to.write(chunk);
    // 'drain' comes once `to` is empty; write() has said "full" by then (its own mark is lower).
    if (to.writableLength >= highWaterMark) from.pause();
  };
  const onDrain = () => from.resume();
  // Once `to` takes no more, `from` is no longer read (as pipe() unpipes): its peer is held back by
  // TCP's window instead of being read and thrown away at full speed.
  const stop = () => {
    from.off('data', onData);
    to.off('drain', onDrain);
    from.pause();
  };
  from.on('data', onData);
  to.on('drain', onDrain);
  to.once('finish', stop);
  to.once('close', stop);
  from.once('end', () => to.end());
}

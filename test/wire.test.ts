import { describe, expect, it } from 'vitest';
import { FrameDecoder, FrameEncoder, FrameError, FrameKind, FRAME_PREFIX_BYTES } from '../framework/wire/frame.js';
import {
  decodeRequestHeader,
  decodeStatusHeader,
  encodeRequestHeader,
  encodeStatusHeader,
  HeaderError,
} from '../framework/wire/header.js';
import { parseStatus, RpcError, Status, statusName, toRpcError } from '../framework/wire/status.js';

type Frame = { kind: number; callId: number; header: string; body: string };

function collect(max = 1 << 20): { decoder: FrameDecoder; frames: Frame[] } {
  const frames: Frame[] = [];
  const decoder = new FrameDecoder(max, (kind, callId, header, body) =>
    frames.push({ kind, callId, header: header.toString('latin1'), body: body.toString('latin1') }),
  );
  return { decoder, frames };
}

const bytes = (s: string) => Buffer.from(s, 'latin1');

describe('frame codec', () => {
  it('round-trips frames written by the encoder, in order, with exact layout', () => {
    const enc = new FrameEncoder(16);
    const size = enc.write(FrameKind.REQUEST, 7, bytes('hdr'), bytes('body!'));
    expect(size).toBe(FRAME_PREFIX_BYTES + 3 + 5);
    enc.write(FrameKind.RESPONSE, 0xffffffff, undefined, bytes('x'));
    enc.write(FrameKind.PING, 3, undefined, undefined);
    const out = enc.take()!;
    expect(out.readUInt32BE(0)).toBe(size - 4);
    expect(out[4]).toBe(FrameKind.REQUEST);
    expect(out.readUInt32BE(5)).toBe(7);
    expect(out.readUInt32BE(9)).toBe(3);
    expect(enc.take()).toBeUndefined();
    const { decoder, frames } = collect();
    decoder.push(out);
    expect(frames).toEqual([
      { kind: FrameKind.REQUEST, callId: 7, header: 'hdr', body: 'body!' },
      { kind: FrameKind.RESPONSE, callId: 0xffffffff, header: '', body: 'x' },
      { kind: FrameKind.PING, callId: 3, header: '', body: '' },
    ]);
    expect(decoder.pendingBytes).toBe(0);
  });

  it('reassembles frames split at every possible byte boundary', () => {
    const enc = new FrameEncoder();
    enc.write(FrameKind.REQUEST, 1, bytes('h1'), bytes('first body'));
    enc.write(FrameKind.REQUEST, 2, bytes('h2'), bytes('second'));
    const all = enc.take()!;
    for (let cut = 1; cut < all.length; cut++) {
      for (let cut2 = cut; cut2 < all.length; cut2 += 5) {
        const { decoder, frames } = collect();
        decoder.push(all.subarray(0, cut));
        decoder.push(all.subarray(cut, cut2));
        decoder.push(all.subarray(cut2));
        expect(frames.map((f) => [f.callId, f.header, f.body])).toEqual([
          [1, 'h1', 'first body'],
          [2, 'h2', 'second'],
        ]);
      }
    }
  });

  it('feeds byte by byte', () => {
    const enc = new FrameEncoder();
    enc.write(FrameKind.GOAWAY, 9, bytes('why'), undefined);
    const all = enc.take()!;
    const { decoder, frames } = collect();
    for (const b of all) decoder.push(Buffer.from([b]));
    expect(frames).toEqual([{ kind: FrameKind.GOAWAY, callId: 9, header: 'why', body: '' }]);
  });

  it('grows past its initial capacity and still encodes large frames exactly', () => {
    const enc = new FrameEncoder(8);
    const big = Buffer.alloc(100_000, 0x61);
    enc.write(FrameKind.REQUEST, 1, bytes('h'), big);
    const { decoder, frames } = collect();
    decoder.push(enc.take()!);
    expect(frames[0]!.body.length).toBe(100_000);
  });

  it('rejects a frame above the maximum, counting the prefix', () => {
    const enc = new FrameEncoder();
    enc.write(FrameKind.REQUEST, 1, undefined, Buffer.alloc(100 - FRAME_PREFIX_BYTES));
    const exact = enc.take()!;
    const ok = collect(100);
    ok.decoder.push(exact);
    expect(ok.frames).toHaveLength(1);
    enc.write(FrameKind.REQUEST, 1, undefined, Buffer.alloc(101 - FRAME_PREFIX_BYTES));
    const over = collect(100);
    expect(() => over.decoder.push(enc.take()!)).toThrow(/exceeds the maximum frame size 100/);
  });

  it('rejects lengths below the minimum and header lengths beyond the frame', () => {
    const tiny = Buffer.alloc(8);
    tiny.writeUInt32BE(4, 0);
    expect(() => collect().decoder.push(tiny)).toThrow(FrameError);
    const bad = Buffer.alloc(13);
    bad.writeUInt32BE(9, 0);
    bad.writeUInt32BE(5, 9); // header length 5 in a frame with no room for it
    expect(() => collect().decoder.push(bad)).toThrow(/header length 5 exceeds/);
  });

  it('calls the methods of an object sink on that object: frames, a skipped oversized frame, and the large-frame question', () => {
    class Sink {
      readonly seen: string[] = [];
      onFrame(kind: number, callId: number, header: Buffer, body: Buffer): void {
        this.seen.push(`frame ${kind} ${callId} ${header.toString('latin1')} ${body.toString('latin1')}`);
      }
      onOversized(kind: number, callId: number, size: number): void {
        this.seen.push(`oversized ${kind} ${callId} ${size}`);
      }
      onLarge(kind: number, callId: number, size: number): boolean {
        this.seen.push(`large ${kind} ${callId} ${size}`);
        return false; // skip it
      }
    }
    const sink = new Sink();
    const decoder = new FrameDecoder(100 * 1024, sink);
    const enc = new FrameEncoder(16);
    enc.write(FrameKind.REQUEST, 1, bytes('h'), bytes('b'));
    enc.write(FrameKind.REQUEST, 2, undefined, Buffer.alloc(200 * 1024)); // over the maximum, within 4x: skipped
    enc.write(FrameKind.REQUEST, 3, undefined, Buffer.alloc(80 * 1024)); // large: asked, refused, skipped
    enc.write(FrameKind.PING, 4, undefined, undefined);
    const out = enc.take()!;
    // In two pieces, so that the large frame has not fully arrived when it is asked about.
    decoder.push(out.subarray(0, 200 * 1024 + 100));
    decoder.push(out.subarray(200 * 1024 + 100));
    expect(sink.seen).toEqual([
      `frame ${FrameKind.REQUEST} 1 h b`,
      `oversized ${FrameKind.REQUEST} 2 ${FRAME_PREFIX_BYTES + 200 * 1024}`,
      `large ${FrameKind.REQUEST} 3 ${FRAME_PREFIX_BYTES + 80 * 1024}`,
      `frame ${FrameKind.PING} 4  `,
    ]);
  });

  it('delivers the frames before a bad one', () => {
    const enc = new FrameEncoder();
    enc.write(FrameKind.PING, 1, undefined, undefined);
    const good = enc.take()!;
    const bad = Buffer.alloc(4);
    bad.writeUInt32BE(0xffffffff, 0);
    const { decoder, frames } = collect();
    expect(() => decoder.push(Buffer.concat([good, bad]))).toThrow(FrameError);
    expect(frames).toHaveLength(1);
  });
});

describe('headers', () => {
  it('round-trips a request header', () => {
    const h = { m: 'pkg.Svc/Method', d: 250, t: 'abc', md: { a: '1' }, pm: ['a'] };
    expect(decodeRequestHeader(encodeRequestHeader(h))).toEqual(h);
  });

  it('rejects request headers that are not msgpack maps with a method', () => {
    expect(() => decodeRequestHeader(Buffer.from([0xc1]))).toThrow(HeaderError);
    expect(() => decodeRequestHeader(encodeRequestHeader(42 as never))).toThrow(/not a map/);
    expect(() => decodeRequestHeader(encodeRequestHeader({} as never))).toThrow(/no method/);
    expect(() => decodeRequestHeader(encodeRequestHeader({ m: 'a/b', d: 'soon' } as never))).toThrow(/deadline/);
    expect(() => decodeRequestHeader(encodeRequestHeader({ m: 'a/b', md: { k: 1 } } as never))).toThrow(/metadata/);
    expect(() => decodeRequestHeader(encodeRequestHeader({ m: 'a/b', pm: [1] } as never))).toThrow(/propagation/);
  });

  it('encodes plain OK as zero bytes and everything else as a map', () => {
    expect(encodeStatusHeader(Status.OK).length).toBe(0);
    expect(decodeStatusHeader(new Uint8Array(0))).toEqual({ s: Status.OK });
    expect(decodeStatusHeader(encodeStatusHeader(Status.OK, undefined, { k: 'v' }))).toEqual({ s: 0, md: { k: 'v' } });
    expect(decodeStatusHeader(encodeStatusHeader(Status.NOT_FOUND, 'gone'))).toEqual({ s: 5, e: 'gone' });
    expect(() => decodeStatusHeader(encodeRequestHeader({ m: 'x' }))).toThrow(/no status code/);
  });
});

describe('status codes', () => {
  it('uses gRPC numbers and names', () => {
    expect(Status.DEADLINE_EXCEEDED).toBe(4);
    expect(Status.UNAUTHENTICATED).toBe(16);
    expect(statusName(14)).toBe('UNAVAILABLE');
    expect(statusName(99)).toBe('UNKNOWN');
    expect(parseStatus('not_found')).toBe(Status.NOT_FOUND);
    expect(parseStatus('8')).toBe(Status.RESOURCE_EXHAUSTED);
    expect(() => parseStatus('NOPE')).toThrow(/unknown status code/);
  });

  it('turns thrown values into RpcErrors', () => {
    const e = new RpcError(Status.ABORTED, 'conflict', { k: 'v' });
    expect(toRpcError(e)).toBe(e);
    expect(toRpcError(new Error('boom'))).toMatchObject({ code: Status.INTERNAL, message: 'boom' });
    expect(toRpcError('text')).toMatchObject({ code: Status.INTERNAL, message: 'text' });
    const abort = new Error('stop');
    abort.name = 'AbortError';
    expect(toRpcError(abort).code).toBe(Status.CANCELLED);
    expect(new RpcError(Status.OK, 'x').code).toBe(Status.UNKNOWN);
  });

  it('recognises an RpcError made by another copy of the module', () => {
    const foreign = Object.assign(new Error('from elsewhere'), { [Symbol.for('svrkit.RpcError')]: true, code: 5 });
    expect(foreign instanceof RpcError).toBe(true);
    expect(new Error('plain') instanceof RpcError).toBe(false);
  });
});

import { describe, expect, it } from 'vitest';
import {
  decodeGrpcMessage,
  encodeGrpcMessage,
  formatGrpcTimeout,
  frameGrpcMessage,
  GrpcFramingError,
  GrpcMessageDecoder,
  isGrpcContentType,
  isGrpcMetadataKey,
  parseGrpcTimeout,
  statusOfRstStream,
  grpcMetadataHeaders,
  statusOfHttpStatus,
} from '../../framework/wire/grpc-codec.js';
import { describeForeignProtocol, detectForeignProtocol } from '../../framework/wire/foreign-protocol.js';

describe('gRPC length-prefixed messages', () => {
  it('round-trips messages split at every byte boundary, several to a chunk, empty ones included', () => {
    const bodies = [Buffer.from('hello'), Buffer.alloc(0), Buffer.alloc(300, 7), Buffer.from('x')];
    const stream = Buffer.concat(bodies.map(frameGrpcMessage));
    expect(stream.length).toBe(bodies.reduce((n, b) => n + 5 + b.length, 0));
    for (let cut = 0; cut <= stream.length; cut++) {
      const d = new GrpcMessageDecoder(1024);
      const got = [...d.push(stream.subarray(0, cut)), ...d.push(stream.subarray(cut))].map((b) => Buffer.from(b));
      expect(got).toEqual(bodies);
      expect(d.pendingBytes).toBe(0);
    }
    const d = new GrpcMessageDecoder(1024);
    const got: Buffer[] = [];
    for (const byte of stream) got.push(...d.push(Buffer.from([byte])));
    expect(got.map((b) => Buffer.from(b))).toEqual(bodies);
  });

  it('refuses a compressed message (UNIMPLEMENTED), an unknown flag (INTERNAL) and one over the maximum (RESOURCE_EXHAUSTED), from the prefix alone', () => {
    const compressed = frameGrpcMessage(Buffer.from('abc'));
    compressed[0] = 1;
    const odd = frameGrpcMessage(Buffer.from('abc'));
    odd[0] = 9;
    const big = Buffer.alloc(5);
    big.writeUInt32BE(1025, 1);
    const cases: Array<[Buffer, number, RegExp]> = [
      [compressed, 12, /compressed/],
      [odd, 13, /flag 9/],
      [big, 8, /1025 bytes, over the maximum of 1024/],
    ];
    for (const [bytes, status, message] of cases) {
      let caught: unknown;
      try {
        new GrpcMessageDecoder(1024).push(bytes);
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(GrpcFramingError);
      expect((caught as GrpcFramingError).status).toBe(status);
      expect((caught as GrpcFramingError).message).toMatch(message);
    }
  });
});

describe('grpc-timeout', () => {
  it('reads every unit, and nothing malformed', () => {
    expect(parseGrpcTimeout('2H')).toBe(7_200_000);
    expect(parseGrpcTimeout('3M')).toBe(180_000);
    expect(parseGrpcTimeout('5S')).toBe(5000);
    expect(parseGrpcTimeout('250m')).toBe(250);
    expect(parseGrpcTimeout('1500u')).toBe(1.5);
    expect(parseGrpcTimeout('99999999n')).toBeCloseTo(99.999999, 9);
    for (const bad of ['', 'm', '123', '123456789m', '-5m', '5 m', '5x', '1.5S', ' 5S', '5S ']) expect(parseGrpcTimeout(bad), bad).toBeUndefined();
  });

  it('writes ms while they fit 8 digits, then a larger unit rounded up, never earlier than asked', () => {
    expect(formatGrpcTimeout(1500)).toBe('1500m');
    expect(formatGrpcTimeout(0.2)).toBe('1m');
    expect(formatGrpcTimeout(99_999_999)).toBe('99999999m');
    expect(formatGrpcTimeout(100_000_001)).toBe('100001S');
    expect(formatGrpcTimeout(1e12)).toBe('16666667M');
    expect(formatGrpcTimeout(1e15)).toBe('99999999H'); // the most it can say (11,415 years)
    for (const ms of [1, 999, 12_345, 1e8, 3.6e9, 1e12]) expect(parseGrpcTimeout(formatGrpcTimeout(ms))!).toBeGreaterThanOrEqual(ms);
  });
});

describe('grpc-message', () => {
  it('leaves printable ASCII as it is and percent-encodes the rest as UTF-8, reversibly', () => {
    expect(encodeGrpcMessage('no such user: bob')).toBe('no such user: bob');
    expect(encodeGrpcMessage('100% done\n')).toBe('100%25 done%0A');
    expect(encodeGrpcMessage('héllo ✓')).toBe('h%C3%A9llo %E2%9C%93');
    for (const m of ['', 'plain', '100% done\n', 'héllo ✓ 🚀', '%%%', '\u0000\u007f']) expect(decodeGrpcMessage(encodeGrpcMessage(m))).toBe(m);
  });

  it('keeps a % that starts no escape, and turns bytes that are not UTF-8 into U+FFFD', () => {
    expect(decodeGrpcMessage('50% off, %zz, %4')).toBe('50% off, %zz, %4');
    expect(decodeGrpcMessage('bad %FF byte')).toBe('bad \uFFFD byte');
  });
});

describe('headers', () => {
  it('tells metadata from the protocol\'s own headers', () => {
    for (const k of ['x-user-id', 'authorization', 'trace-bin', 'grpc-retry-pushback-ms']) expect(isGrpcMetadataKey(k), k).toBe(true);
    for (const k of [':path', ':authority', 'content-type', 'te', 'user-agent', 'grpc-timeout', 'grpc-encoding', 'grpc-status', 'grpc-message', 'connection', '']) expect(isGrpcMetadataKey(k), k).toBe(false);
  });

  it('accepts application/grpc, +proto and parameters, and nothing else', () => {
    for (const v of ['application/grpc', 'application/grpc+proto', 'Application/GRPC', 'application/grpc;charset=utf-8']) expect(isGrpcContentType(v), v).toBe(true);
    for (const v of [undefined, '', 'application/json', 'application/grpc-web', 'application/grpc+json', 'text/plain']) expect(isGrpcContentType(v), String(v)).toBe(false);
  });

  it('maps RST_STREAM codes to statuses', () => {
    expect([0x8, 0x7, 0xb, 0xc, 0x2, 0x0].map(statusOfRstStream)).toEqual([1, 14, 8, 7, 13, 13]);
  });
});

describe('outgoing metadata', () => {
  it('keeps what gRPC can carry, and names what it cannot', () => {
    const { headers, dropped } = grpcMetadataHeaders({
      'x-ok': 'fine value',
      'trace-bin': 'AAEC+/8=',
      'multi-bin': 'AAE=, AgM=',
      connection: 'close',
      te: 'x',
      'http2-settings': 'AAA',
      'grpc-status': '5',
      'X-Upper': 'v',
      'x-nl': 'a\nb',
      'x-utf8': 'héllo',
      'bad-bin': '%%%',
    });
    expect(headers).toEqual({ 'x-ok': 'fine value', 'trace-bin': 'AAEC+/8=', 'multi-bin': 'AAE=, AgM=', 'x-upper': 'v' });
    expect(dropped.sort()).toEqual(['bad-bin', 'connection', 'grpc-status', 'http2-settings', 'te', 'x-nl', 'x-utf8']);
    expect(grpcMetadataHeaders(undefined)).toEqual({ headers: {}, dropped: [] });
  });

  it('maps non-gRPC HTTP statuses as http-grpc-status-mapping.md does', () => {
    expect([400, 401, 403, 404, 429, 502, 503, 504, 500, 302].map(statusOfHttpStatus)).toEqual([13, 16, 7, 12, 14, 14, 14, 14, 2, 2]);
  });
});

describe('announced message sizes', () => {
  it('tells the size of a message from its prefix, before its body has come, and counts messages', () => {
    const d = new GrpcMessageDecoder(1 << 20);
    const body = Buffer.alloc(100_000, 1);
    const framed = frameGrpcMessage(body);
    expect(d.announcedBytes).toBe(0);
    expect(d.push(framed.subarray(0, 3))).toEqual([]);
    expect(d.announcedBytes).toBe(0); // the prefix is not complete yet
    expect(d.push(framed.subarray(3, 16_384))).toEqual([]);
    expect(d.announcedBytes).toBe(100_005);
    expect(d.messagesDecoded).toBe(0);
    const out = d.push(Buffer.concat([framed.subarray(16_384), frameGrpcMessage(Buffer.from([7]))]));
    expect(out.map((m) => m.length)).toEqual([100_000, 1]);
    expect(d.messagesDecoded).toBe(2);
    expect(d.announcedBytes).toBe(0);
    expect(d.pendingBytes).toBe(0);
  });
});

describe('foreign protocols', () => {
  it('names HTTP/2 (client and server), HTTP/1.x, TLS, and asks for more when it cannot tell yet', () => {
    expect(detectForeignProtocol(Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1'))).toBe('HTTP/2 client');
    expect(detectForeignProtocol(Buffer.from('PR', 'latin1'))).toBe('more');
    // A server's first frame: SETTINGS on stream 0, empty or with 6-byte entries.
    expect(detectForeignProtocol(Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]))).toBe('HTTP/2 server');
    expect(detectForeignProtocol(Buffer.from([0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100]))).toBe('HTTP/2 server');
    expect(detectForeignProtocol(Buffer.from('GET / HTTP/1.1\r\n', 'latin1'))).toBe('HTTP/1.x request');
    expect(detectForeignProtocol(Buffer.from('HTTP/1.1 400 Bad Request\r\n', 'latin1'))).toBe('HTTP/1.x response');
    expect(detectForeignProtocol(Buffer.from('GE', 'latin1'))).toBe('more');
    expect(detectForeignProtocol(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00]))).toBe('TLS');
    expect(detectForeignProtocol(Buffer.from([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]))).toBe('TLS');
    // A svrkit frame: a length under 16 MiB, then its kind: none of the above.
    expect(detectForeignProtocol(Buffer.from([0, 0, 0, 20, 1, 0, 0, 0, 1, 0, 0, 0, 0]))).toBeUndefined();
    for (const p of ['HTTP/2 server', 'HTTP/2 client', 'HTTP/1.x request', 'TLS'] as const) expect(describeForeignProtocol(p)).toMatch(/the peer speaks/);
  });
});

/**
 * One svrkit wire frame built by hand, for tests that talk to a server over a raw socket:
 * length (u32, bytes after it), kind (u8), call id (u32), header length (u32), header, body.
 * @param kind - the frame kind (`FrameKind`); `callId` - the call's id.
 * @param header - the header bytes (msgpack); `body` - the body bytes.
 * @returns the encoded frame.
 */
export function rawFrame(kind: number, callId: number, header: Uint8Array, body: Uint8Array): Buffer {
  const b = Buffer.alloc(13 + header.length + body.length);
  b.writeUInt32BE(9 + header.length + body.length, 0);
  b[4] = kind;
  b.writeUInt32BE(callId, 5);
  b.writeUInt32BE(header.length, 9);
  b.set(header, 13);
  b.set(body, 13 + header.length);
  return b;
}

/**
 * What both stacks stream: an Event (bench/stream/feed.proto) of `fixed32 seq` >= 1 and a 57-byte
 * `payload`, which protobuf encodes in exactly MESSAGE_BYTES = 64 bytes:
 * seq = 1 (tag) + 4 (fixed32), payload = 1 (tag) + 1 (length) + 57. That is the message alone,
 * without either transport's framing (svrkit's frame header, gRPC's 5-byte length prefix and
 * HTTP/2 DATA frames).
 */
export const PAYLOAD_BYTES = 57;
export const MESSAGE_BYTES = 64;
export const PAYLOAD: Buffer = Buffer.alloc(PAYLOAD_BYTES, 0x61);

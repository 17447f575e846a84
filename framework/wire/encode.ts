/**
 * Encoding of messages a handler returned or yielded, which may be deep-partials: fields left out
 * encode as their proto3 defaults, as connect-es and nice-grpc handlers allow.
 */
import type { MessageType } from './definition.js';

/** A value that cannot be encoded as the message type it should be. */
export class EncodeError extends Error {
  /**
   * @param typeName - fully-qualified message type, e.g. `'notes.v1.Note'`.
   * @param reason - what was wrong, e.g. `'notes.v1.Note.revision: expected bigint, got number 42'`.
   */
  constructor(
    readonly typeName: string,
    reason: string,
  ) {
    super(reason);
    this.name = 'EncodeError';
  }
}

/**
 * Encodes a complete or deep-partial message.
 *
 * The complete form is tried first (the common case costs one encode); a value that the codec
 * cannot take as it is goes through `fromPartial`, which fills proto3 defaults.
 * @param type - the message codec.
 * @param typeName - the fully-qualified type name, for errors.
 * @param value - a message or a deep-partial of one.
 * @returns the protobuf bytes.
 * @throws EncodeError naming the type and what was wrong when the value cannot be encoded.
 */
export function encodeMessage<T>(type: MessageType<T>, typeName: string, value: unknown): Uint8Array {
  try {
    return type.encode(value as T).finish();
  } catch {
    // A partial message (a missing repeated or bytes field throws in encode): fill the defaults.
  }
  try {
    return type.encode(type.fromPartial(value ?? {})).finish();
  } catch (err) {
    throw new EncodeError(typeName, `${typeName}: ${(err as Error).message}`);
  }
}

/**
 * The calls in flight on one connection, by call id: the first in two fields, any more in a Map
 * made when the second arrives. A server of long connections (seed 003's access layer, the
 * inbox's Sync server) holds one idle stream on each of many connections, and a Map each would
 * cost them more than the rest of the table (a Map and its hash table take about 300 bytes in a
 * heap snapshot of Node 20). The Map is let go when it empties.
 */
export class CallTable<C> {
  /** The call held in the fields, or undefined. */
  private oneCall: C | undefined = undefined;
  /** Its id (meaningful while `oneCall` is set). */
  private oneId = 0;
  /** The other calls, once a second one arrived while the first was in flight. */
  private more: Map<number, C> | undefined = undefined;

  /** How many calls are in flight. */
  get size(): number {
    return (this.oneCall === undefined ? 0 : 1) + (this.more === undefined ? 0 : this.more.size);
  }

  /** The call with id `callId`, or undefined. */
  get(callId: number): C | undefined {
    if (this.oneCall !== undefined && this.oneId === callId) return this.oneCall;
    return this.more?.get(callId);
  }

  /** Whether a call with id `callId` is in flight. */
  has(callId: number): boolean {
    return this.get(callId) !== undefined;
  }

  /** Adds (or replaces) the call with id `callId`. */
  set(callId: number, call: C): void {
    if (this.oneCall === undefined || this.oneId === callId) {
      if (this.oneCall === undefined && this.more?.has(callId) === true) this.more.set(callId, call);
      else {
        this.oneCall = call;
        this.oneId = callId;
      }
      return;
    }
    (this.more ??= new Map()).set(callId, call);
  }

  /** Removes the call with id `callId` (an emptied Map is let go). @returns whether it was there. */
  delete(callId: number): boolean {
    if (this.oneCall !== undefined && this.oneId === callId) {
      this.oneCall = undefined;
      return true;
    }
    const more = this.more;
    if (more === undefined || !more.delete(callId)) return false;
    if (more.size === 0) this.more = undefined;
    return true;
  }

  /** The calls in flight, as an array in no particular order (a copy: ending them while going through it is safe). */
  toArray(): C[] {
    const all: C[] = [];
    if (this.oneCall !== undefined) all.push(this.oneCall);
    if (this.more !== undefined) for (const c of this.more.values()) all.push(c);
    return all;
  }
}

/**
 * Deadline timers for calls, without a timer object per call.
 *
 * Node keeps its timers in one linked list per duration, because timers of equal duration expire
 * in the order they were armed (lib/internal/timers.js). This module applies that idea with the
 * links stored on the call object itself: calls armed with the same relative timeout share one
 * list and one `setTimeout`, so arming and disarming a deadline costs a map lookup and a few
 * pointer writes, and allocates nothing. Services use a handful of configured timeouts, so the
 * lists are few.
 */

/** An object that can wait in a deadline list (a client or server call). */
export interface DeadlineEntry {
  /** Absolute deadline, epoch ms. */
  readonly deadline: number;
  /** Called once when the deadline passes (the entry is already unlinked). */
  onDeadline(now: number): void;
  /** Links, owned by `DeadlineTimers`. */
  deadlineList: DeadlineList | undefined;
  deadlinePrev: DeadlineEntry | undefined;
  deadlineNext: DeadlineEntry | undefined;
}

/** One list: entries armed with the same relative timeout, in deadline order. */
export interface DeadlineList {
  readonly key: number;
  head: DeadlineEntry | undefined;
  tail: DeadlineEntry | undefined;
  timer: NodeJS.Timeout | undefined;
  /** Deadline the timer is armed for (epoch ms). */
  armedFor: number;
}

/** The longest delay Node's timers accept (2^31-1 ms); longer ones would fire at once. */
const MAX_TIMER_DELAY_MS = 0x7fffffff;

/**
 * Lists of entries by relative timeout, each with one timer armed for its earliest deadline.
 * Removing the head does not re-arm: the timer fires at the old time, finds the new head not yet
 * due and re-arms, as Node's own timer lists do.
 */
export class DeadlineTimers {
  private readonly lists = new Map<number, DeadlineList>();

  /** Number of entries waiting (for tests and metrics). */
  size = 0;

  /** @param now - the clock deadlines are read against when a timer fires (epoch ms); default `Date.now`. */
  constructor(private readonly now: () => number = Date.now) {}

  /**
   * Arms `entry` for `entry.deadline`.
   * @param entry - an unlinked entry with a finite deadline.
   * @param now - the current time, epoch ms.
   */
  add(entry: DeadlineEntry, now: number): void {
    const key = Math.max(0, Math.ceil(entry.deadline - now));
    let list = this.lists.get(key);
    if (list === undefined) {
      list = { key, head: undefined, tail: undefined, timer: undefined, armedFor: 0 };
      this.lists.set(key, list);
    }
    // Entries of one key arrive in deadline order, except across clock steps; keep the list
    // sorted by walking back from the tail (almost always zero steps).
    let after = list.tail;
    while (after !== undefined && after.deadline > entry.deadline) after = after.deadlinePrev;
    entry.deadlineList = list;
    entry.deadlinePrev = after;
    entry.deadlineNext = after === undefined ? list.head : after.deadlineNext;
    if (entry.deadlineNext !== undefined) entry.deadlineNext.deadlinePrev = entry;
    else list.tail = entry;
    if (after !== undefined) after.deadlineNext = entry;
    else list.head = entry;
    this.size++;
    if (list.timer === undefined || entry.deadline < list.armedFor) this.arm(list, now);
  }

  /** Disarms `entry` (no-op when it is not armed). */
  remove(entry: DeadlineEntry): void {
    const list = entry.deadlineList;
    if (list === undefined) return;
    const prev = entry.deadlinePrev;
    const next = entry.deadlineNext;
    if (prev !== undefined) prev.deadlineNext = next;
    else list.head = next;
    if (next !== undefined) next.deadlinePrev = prev;
    else list.tail = prev;
    entry.deadlineList = entry.deadlinePrev = entry.deadlineNext = undefined;
    this.size--;
    if (list.head === undefined) {
      if (list.timer !== undefined) clearTimeout(list.timer);
      this.lists.delete(list.key);
    }
  }

  private arm(list: DeadlineList, now: number): void {
    if (list.timer !== undefined) clearTimeout(list.timer);
    const due = list.head!.deadline;
    list.armedFor = due;
    list.timer = setTimeout(() => this.fire(list), Math.max(1, Math.min(due - now, MAX_TIMER_DELAY_MS)));
  }

  private fire(list: DeadlineList): void {
    list.timer = undefined;
    const now = this.now();
    // Date.now() can trail the timer clock by a millisecond, hence `- 1`. The head is read again
    // each time: an onDeadline may cancel other entries (a call's children) in this very list.
    let e: DeadlineEntry | undefined;
    while ((e = list.head) !== undefined && e.deadline - 1 <= now) {
      this.remove(e);
      e.onDeadline(now);
    }
    if (list.head !== undefined && list.timer === undefined && this.lists.get(list.key) === list) this.arm(list, now);
  }
}

/**
 * PaxosKV's membership configurations (services/paxoskv/core/membership.ts), from the transcript
 * test/paxoskv/testdata/membership.txt (data-driven, as etcd-io/raft's tests): the two steps of a
 * change, joint quorums, the sync set, and the errors of bad changes.
 */
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import {
  abortChange,
  beginChange,
  checkTransition,
  configurationFrom,
  configurationData,
  finishWaitsFor,
  describeConfiguration,
  finishChange,
  initialConfiguration,
  isQuorum,
  membersOf,
  quorumStillPossible,
  roleOf,
  syncSet,
  syncedEnough,
  votersOf,
  type Configuration,
  type MembershipChange,
} from '../../services/paxoskv/core/membership.js';
import { runTranscript } from '../support/datadriven.js';

const FILE = fileURLToPath(new URL('./testdata/membership.txt', import.meta.url));
const idList = (s: string): number[] => (s === '-' ? [] : s.split(',').map(Number));
const ids = (s: string): Set<number> => new Set(idList(s));
const list = (xs: readonly number[]) => `[${xs.join(',')}]`;

describe('membership transcript', () => {
  let current: Configuration | undefined;
  const run = (cmd: string, args: readonly string[]): string => {
    if (cmd === 'init') {
      const kv = Object.fromEntries(args.map((a) => a.split('=') as [string, string]));
      current = initialConfiguration(idList(kv.voters ?? '-'), idList(kv.learners ?? '-'));
      return describeConfiguration(current);
    }
    if (current === undefined) throw new Error('init first');
    const c = current;
    switch (cmd) {
      case 'begin': {
        const [kind, a, b] = args;
        const at = args.find((x) => x.startsWith('at='))?.slice(3);
        const change: MembershipChange =
          kind === 'add'
            ? { kind: 'add', member: Number(a), ...(at === undefined ? {} : { address: at }) }
            : kind === 'add-learner'
              ? { kind: 'add', member: Number(a), learner: true }
              : kind === 'remove'
                ? { kind: 'remove', member: Number(a) }
                : kind === 'set'
                  ? { kind: 'set', voters: idList(a!), learners: idList(b ?? '-') }
                  : { kind: 'replace', remove: Number(a), add: Number(b), ...(at === undefined ? {} : { address: at }) };
        current = beginChange(c, change);
        return describeConfiguration(current);
      }
      case 'finish':
        current = finishChange(c);
        return describeConfiguration(current);
      case 'abort':
        current = abortChange(c);
        return describeConfiguration(current);
      case 'waits':
        return finishWaitsFor(c, ids(args[0]!)) ?? 'may finish';
      case 'check': {
        // check NEXT-JSON: whether the configuration key may move from the current one to it.
        checkTransition(c, configurationFrom(JSON.parse(args.join(' '))));
        return 'ok';
      }
      case 'json':
        return JSON.stringify(configurationData(c));
      case 'quorum':
        return String(isQuorum(c, ids(args[0]!)));
      case 'possible':
        return String(quorumStillPossible(c, ids(args[0]!)));
      case 'sync': {
        const s = syncSet(c);
        return `sync ${list(s.sync)}, joiners ${list(s.joiners)}`;
      }
      case 'synced':
        return String(syncedEnough(c, ids(args[0]!)));
      case 'role':
        return roleOf(c, Number(args[0]));
      case 'voters':
        return list(votersOf(c));
      case 'members':
        return list(membersOf(c));
      default:
        throw new Error(`unknown command ${cmd}`);
    }
  };

  runTranscript(FILE, run);

});

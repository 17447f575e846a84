import { defaultSimOptions, simulate } from './test/paxoskv/simulator.js';
const lines: string[] = [];
simulate(defaultSimOptions(821157), (l) => lines.push(l));
const sel = lines.filter((l) => /keyList|key3@|-> [589] (catchUp|finish) key3|learn key3|wipe|rolled back|data dir is gone|rejoin|(1|2|5) adopts/.test(l) && !/client/.test(l));
console.log(sel.filter((l) => Number(l.trim().split(' ')[0]) < 7000).slice(-45).join('\n'));

// `--import` this (bench/run-all.ts does, when dist/ is current) to run a benchmark against the
// compiled gateway: every import of src/<path>.ts loads dist/<path>.js (compiled-hooks.mjs).
import { register } from 'node:module';

process.env.SWITCHBOARD_BENCH_CODE = 'dist';
register('./compiled-hooks.mjs', import.meta.url);

// Preloaded (node --import) into a gateway by test/integration/replay-crash.test.ts: kill -9s the
// process right after its Nth dead-letter replay (BullMQ Job.retry) resolves, i.e. after the
// dead letter moved and before the replay's event was recorded. N comes from
// SB_TEST_KILL_AFTER_RETRIES. Patches BullMQ, not Switchboard, so the gateway under test runs
// its own unmodified code (from src/ or dist/ alike).
import { Job } from 'bullmq';

const after = Number(process.env.SB_TEST_KILL_AFTER_RETRIES);
if (after > 0) {
  const retry = Job.prototype.retry;
  let done = 0;
  Job.prototype.retry = async function (...args) {
    const result = await retry.apply(this, args);
    if (++done >= after) process.kill(process.pid, 'SIGKILL');
    return result;
  };
}

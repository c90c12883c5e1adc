import type { Job } from 'bullmq';

/**
 * Puts captured dead letters back for delivery with a full set of attempts, one BullMQ script
 * each, and returns the ids of the jobs it moved. A job that left the failed set since it was
 * captured (discarded, replayed by someone else) is skipped, not an error: the replay is of
 * what was captured and is still a dead letter.
 */
export async function retryDeadLetters(jobs: Job[]): Promise<string[]> {
  const moved: string[] = [];
  for (const job of jobs) {
    try {
      await job.retry('failed', { resetAttemptsMade: true, resetAttemptsStarted: true });
      moved.push(job.id!);
    } catch (err) {
      // Still a dead letter: the retry itself failed (Redis unreachable), so the replay stops here.
      if (await job.isFailed()) throw err;
    }
  }
  return moved;
}

import { defineFlow } from 'switchboard';
import { z } from 'zod';

/**
 * Stands in for a legacy system in the demo: started by a message that carries replyTo, it
 * answers it with its result (a flow started with replyTo replies when it completes).
 */
export default defineFlow({
  name: 'legacy-responder',
  input: z.object({ ref: z.string(), amount: z.number() }),
  async run(_ctx, input) {
    return { ref: input.ref, status: input.amount > 10_000 ? 'needs-review' : 'ok' };
  },
});

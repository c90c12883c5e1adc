import { defineFlow } from 'switchboard';
import { z } from 'zod';

/**
 * Asks the legacy payments system to check a payment (request-reply over a queue it serves) and
 * records the answer. In the demo the "legacy system" is the legacy-responder flow behind the
 * route queue:legacy.requests → flow:legacy-responder; in production it is a queue on your MQ.
 */
export default defineFlow({
  name: 'payment-check',
  input: z.object({ ref: z.string().min(1), amount: z.number().positive() }),
  async run(ctx, input) {
    const reply = await ctx.request('queue:legacy.requests', { ref: input.ref, amount: input.amount }, { timeout: '2m' });
    const status = (reply.body as { status: string }).status;
    await ctx.send('queue:payments.checked', { ref: input.ref, status, checkedAt: ctx.now().toISOString() });
    ctx.log('payment checked', { ref: input.ref, status });
    return { ref: input.ref, status };
  },
});

import { defineFlow } from 'switchboard';
import { z } from 'zod';

/** A payment approved by one of the payment approvers, then checked with the legacy system. */
export default defineFlow({
  name: 'payment-approval',
  input: z.object({ ref: z.string().min(1), amount: z.number().positive(), requester: z.string().min(1) }),
  async run(ctx, input) {
    const decision = await ctx.ask('group:payment-approvers', {
      title: `Approve payment ${input.ref}`,
      description: `${input.requester} asks to pay ${input.amount}.`,
      data: input,
      actions: ['approve', 'reject'],
      fields: { comment: 'text' },
      due: '4h',
    });
    if (decision.action !== 'approve') {
      await ctx.send(`person:${input.requester}`, { ref: input.ref, outcome: 'rejected', by: decision.by, comment: decision.comment ?? null }, { subject: `Payment ${input.ref} rejected` });
      return { status: 'rejected', by: decision.by };
    }
    const check = await ctx.request('queue:legacy.requests', { ref: input.ref, amount: input.amount }, { timeout: '10m' });
    await ctx.send('queue:payments.approved', { ref: input.ref, amount: input.amount, approvedBy: decision.by, legacyStatus: (check.body as { status: string }).status });
    return { status: 'approved', by: decision.by, legacyStatus: (check.body as { status: string }).status };
  },
});

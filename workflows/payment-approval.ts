import { defineFlow } from 'switchboard';
import { z } from 'zod';

/**
 * A payment approved under four-eyes by the payment approvers — never by the person who asked for
 * it, and by two different approvers above 10,000 — then checked with the legacy system. Who asked
 * is who started the flow, as authenticated at the door (ctx.startedBy), not a name in the input.
 */
export default defineFlow({
  name: 'payment-approval',
  input: z.object({ ref: z.string().min(1), amount: z.number().positive() }),
  async run(ctx, input) {
    const requester = ctx.startedBy.name;
    const decision = await ctx.ask('group:payment-approvers', {
      title: `Approve payment ${input.ref}`,
      description: `${requester} asks to pay ${input.amount}.`,
      data: { ...input, requester },
      actions: ['approve', 'reject'],
      fourEyes: true,
      approvals: input.amount > 10_000 ? 2 : 1,
      due: '4h',
    });
    if (decision.action !== 'approve') {
      await ctx.send(`person:${requester}`, { ref: input.ref, outcome: 'rejected', by: decision.by, comment: decision.comment ?? null }, { subject: `Payment ${input.ref} rejected` });
      return { status: 'rejected', by: decision.by };
    }
    const approvedBy = (decision.approvals ?? [decision]).map((a) => a.by);
    const check = await ctx.request('queue:legacy.requests', { ref: input.ref, amount: input.amount }, { timeout: '10m' });
    await ctx.send('queue:payments.approved', { ref: input.ref, amount: input.amount, requester, approvedBy, legacyStatus: (check.body as { status: string }).status });
    return { status: 'approved', by: decision.by, approvedBy, legacyStatus: (check.body as { status: string }).status };
  },
});

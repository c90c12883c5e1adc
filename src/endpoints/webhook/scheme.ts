import { NAME, type SchemeDefinition } from '../../core/address.ts';

export const webhookScheme: SchemeDefinition = {
  scheme: 'webhook',
  expected: 'webhook:<name>, e.g. webhook:crm',
  check: (p) => (NAME.test(p) ? undefined : 'bad webhook name'),
};

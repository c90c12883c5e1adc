import { DOTTED, type SchemeDefinition } from '../../core/address.ts';

export const queueScheme: SchemeDefinition = {
  scheme: 'queue',
  expected: 'queue:<name>, segments of letters, digits, _ or - separated by . or /, e.g. queue:orders.eu',
  check: (p) => (DOTTED.test(p) ? undefined : 'bad queue name'),
};

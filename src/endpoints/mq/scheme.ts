import { namedRemotePath, type SchemeDefinition } from '../../core/address.ts';

export const mqScheme: SchemeDefinition = {
  scheme: 'mq',
  expected: 'mq:<broker>/<address>, e.g. mq:legacy/payments.in',
  check: (p) => namedRemotePath(p, 'broker'),
};

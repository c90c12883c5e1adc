import { namedRemotePath, type SchemeDefinition } from '../../core/address.ts';

export const peerScheme: SchemeDefinition = {
  scheme: 'peer',
  expected: 'peer:<alias>/<queue>, e.g. peer:bank-b/trades',
  check: (p) => namedRemotePath(p, 'peer alias'),
};

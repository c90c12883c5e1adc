import type { SchemeDefinition } from '../../core/address.ts';

const USER = /^[A-Za-z0-9][A-Za-z0-9._@-]*$/;

export const personScheme: SchemeDefinition = {
  scheme: 'person',
  expected: 'person:<user>, e.g. person:alice',
  check: (p) => (USER.test(p) ? undefined : 'bad user name'),
};

export const groupScheme: SchemeDefinition = {
  scheme: 'group',
  expected: 'group:<group>, e.g. group:payment-approvers',
  check: (p) => (USER.test(p) ? undefined : 'bad group name'),
};

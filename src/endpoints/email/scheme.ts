import type { SchemeDefinition } from '../../core/address.ts';

const EMAIL = /^[^\s@<>(),;:"]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$/;

export const emailScheme: SchemeDefinition = {
  scheme: 'email',
  expected: 'email:<user@domain>, e.g. email:ops@example.com',
  check: (p) => (EMAIL.test(p) ? undefined : 'bad e-mail address'),
};

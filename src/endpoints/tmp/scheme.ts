import { type SchemeDefinition } from '../../core/address.ts';

/** `tmp:<connection>/<n>`: the n-th temporary queue of one connection of a door (DESIGN §1). */
export const tmpScheme: SchemeDefinition = {
  scheme: 'tmp',
  expected: 'tmp:<connection>/<n>, as given to a dynamic receiver, e.g. tmp:k3x9q2-7/1',
  check: (p) => (/^[A-Za-z0-9_-]+\/[0-9]+$/.test(p) ? undefined : 'bad temporary queue name'),
};

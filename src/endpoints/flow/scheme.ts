import { NAME, type SchemeDefinition } from '../../core/address.ts';

export const flowScheme: SchemeDefinition = {
  scheme: 'flow',
  expected: 'flow:<name> or flow:<name>/<instanceId>, e.g. flow:payment-approval',
  check(p) {
    const [name, instance, ...extra] = p.split('/');
    if (!name || !NAME.test(name)) return 'bad flow name';
    if (extra.length > 0 || (instance !== undefined && !NAME.test(instance))) return 'bad instance id';
    return undefined;
  },
};

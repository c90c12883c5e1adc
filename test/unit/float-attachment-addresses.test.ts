import assert from 'node:assert/strict';
import { test } from 'node:test';
import { attachmentSource, parseAttachmentSource } from '../../src/network/float-tunnel.ts';
import { referencedAttachments } from '../../src/network/float-attachment-pull.ts';

test('a pull address round-trips the attachment id and the byte to resume from', () => {
  assert.deepEqual(parseAttachmentSource(attachmentSource('09ee1225-0fe4-4cd5-a68e-88ffa2e9309a', 1_572_864)), { id: '09ee1225-0fe4-4cd5-a68e-88ffa2e9309a', from: 1_572_864 });
});

test('anything else on the pull prefix is not a pull address (the float closes such a link as not found)', () => {
  for (const bad of [undefined, '', 'switchboard-float/inbound', 'switchboard-float/attachment/abc', 'switchboard-float/attachment/abcdefgh/-1', 'switchboard-float/attachment/abcdefgh/1.5', 'switchboard-float/attachment/a b/0', 'switchboard-float/attachment/../0', 'switchboard-float/attachment/abcdefgh.ij/0', 'switchboard-float/attachment/../../x/0', 'switchboard-float/attachment/abcdefgh/0/extra', 'switchboard-float/attachment/abcdefgh/1234567890123456']) {
    assert.equal(parseAttachmentSource(bad), undefined, String(bad));
  }
});

test('the references a message from the float lists come from its attachments property; malformed or absent is none (the intake then refuses the message)', () => {
  const ref = { id: 'att-12345678', sha256: 'a'.repeat(64), size: 5, name: 'x.pdf', contentType: 'application/pdf' };
  assert.deepEqual(referencedAttachments({ application_properties: { attachments: JSON.stringify([ref]) } } as never), [ref]);
  assert.deepEqual(referencedAttachments({ application_properties: { attachments: '[{"id":"../x"}]' } } as never), []);
  assert.deepEqual(referencedAttachments({ application_properties: { attachments: 'not json' } } as never), []);
  assert.deepEqual(referencedAttachments({} as never), []);
});

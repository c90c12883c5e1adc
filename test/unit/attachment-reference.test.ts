import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatAttachmentRefs, parseAttachmentRefs } from '../../src/attachments/reference.ts';
import { SwitchboardError } from '../../src/core/errors.ts';
import { pieceMessage, readPiece } from '../../src/network/attachment-transfer.ts';

const ref = { id: '6f1c2e9a-0000-4000-8000-000000000001', sha256: 'a'.repeat(64), size: 10, name: 'call.wav', contentType: 'audio/wav' };

test('a reference list round-trips through the header', () => {
  assert.deepEqual(parseAttachmentRefs(formatAttachmentRefs([ref])), [ref]);
  assert.deepEqual(parseAttachmentRefs(undefined), []);
});

test('malformed references are refused with a message naming the field', () => {
  const bad: [unknown, RegExp][] = [
    ['{', /not JSON/],
    [JSON.stringify({}), /JSON array/],
    [JSON.stringify([{ ...ref, id: '../x' }]), /\[0\]\.id/],
    [JSON.stringify([{ ...ref, sha256: 'A'.repeat(64) }]), /\[0\]\.sha256 must be 64 lower-case hex/],
    [JSON.stringify([{ ...ref, size: -1 }]), /\[0\]\.size/],
    [JSON.stringify([{ ...ref, size: 1.5 }]), /\[0\]\.size/],
    [JSON.stringify([{ ...ref, name: 'a/b' }]), /\[0\]\.name/],
    [JSON.stringify([{ ...ref, contentType: 'nonsense' }]), /\[0\]\.contentType/],
    [JSON.stringify(Array.from({ length: 33 }, () => ref)), /at most 32/],
  ];
  for (const [header, why] of bad) {
    assert.throws(() => parseAttachmentRefs(header as string), (err: unknown) => err instanceof SwitchboardError && err.code === 'bad_attachments' && why.test(err.message), String(header).slice(0, 60));
  }
});

test('a peer piece carries its reference, offset and bytes; malformed or oversized pieces are refused', () => {
  const m = pieceMessage(ref, 4, Buffer.from('abcdef')) as { body: unknown; application_properties: Record<string, unknown> };
  const p = readPiece(m, 100);
  assert.deepEqual(p.ref, ref);
  assert.equal(p.offset, 4);
  assert.equal(p.data.toString(), 'abcdef');
  assert.throws(() => readPiece(m, 5), /over the limit of 5/);
  assert.throws(() => readPiece(pieceMessage(ref, 5, Buffer.from('abcdef')) as never, 100), /runs past/);
  assert.throws(() => readPiece({ ...m, application_properties: { ...m.application_properties, 'switchboard-attachment-offset': -1 } }, 100), /byte offset/);
  assert.throws(() => readPiece({ application_properties: m.application_properties, body: 'text' }, 100), /data section/);
});

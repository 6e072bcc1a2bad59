import assert from 'node:assert/strict';
import { test } from 'node:test';
import { hostAllowed } from './security.ts';

test('hostAllowed: loopback names and IP literals on our port; DNS names and other ports are refused', () => {
  for (const h of ['127.0.0.1:8080', 'localhost:8080', '[::1]:8080', '192.168.1.20:8080', 'LOCALHOST:8080'])
    assert.equal(hostAllowed(h, 8080, '127.0.0.1'), true, h);
  for (const h of ['evil.example:8080', 'localhost.evil.example:8080', '127.0.0.1:8081', 'localhost', '', 'a:b:c'])
    assert.equal(hostAllowed(h, 8080, '127.0.0.1'), false, h);
  assert.equal(hostAllowed(undefined, 8080, '127.0.0.1'), false);
  // A name given with --host is this server's own name.
  assert.equal(hostAllowed('box.lan:8080', 8080, 'box.lan'), true);
});

// The web shop in a real browser: Debian's Chromium, driven headless by
// playwright-core against a whole stack that `cargo xtask browser-tests`
// starts (it sets the variables below). Each test signs in as a demo
// account in a context of its own, and saves a screenshot of every page it
// reaches in SHOP_SCREENSHOTS.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import { chromium } from 'playwright-core';

const SHOP = process.env.SHOP_URL;
const CHROMIUM = process.env.SHOP_CHROMIUM || '/usr/bin/chromium';
const SCREENSHOTS = process.env.SHOP_SCREENSHOTS || 'screenshots';
/** Long enough for a checkout on a busy two-core machine. */
const SAGA_MS = 45_000;

assert.ok(SHOP, 'SHOP_URL names the gateway (cargo xtask browser-tests sets it)');
mkdirSync(SCREENSHOTS, { recursive: true });

let browser;

before(async () => {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // No update checks, crash reports or other calls out of the sandbox.
    args: [
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-default-apps',
      '--disable-sync',
      '--no-first-run',
      '--metrics-recording-only',
    ],
  });
});

after(async () => {
  await browser?.close();
});

/** A fresh browser (no cookies, an empty cart) at phone or desktop width. */
async function visitor({ phone = false } = {}) {
  const context = await browser.newContext({
    baseURL: SHOP,
    viewport: phone ? { width: 390, height: 844 } : { width: 1280, height: 900 },
  });
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  return { context, page };
}

async function shot(page, name) {
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage: true });
}

async function signIn(page, customer) {
  await page.goto('/sign-in');
  await page.getByRole('button', { name: `Sign in as ${customer}` }).click();
  await page.waitForURL((url) => !url.pathname.startsWith('/sign-in'));
  assert.equal(await page.locator('#signed-in-as').textContent(), customer);
}

/** Puts one of `sku` in the cart from the catalog page. */
async function addFromCatalog(page, sku) {
  await page.goto('/');
  await page.locator(`li.product[data-sku="${sku}"] button.add-to-cart`).click();
}

async function fillAddress(page, { country = 'DE' } = {}) {
  await page.getByLabel('Name').fill('Ada Lovelace');
  await page.getByLabel('Address', { exact: true }).fill('1 Main St');
  await page.getByLabel('City').fill('Berlin');
  await page.getByLabel('Postal code').fill('10115');
  await page.getByLabel(/^Country/).fill(country);
}

/** The order page's status once it is `status`. */
async function waitForStatus(page, status) {
  await page.locator(`#order-status[data-status="${status}"]`).waitFor({ timeout: SAGA_MS });
}

async function stepEvents(page) {
  return page.locator('#timeline li.step').evaluateAll((steps) => steps.map((s) => s.dataset.event));
}

test('a customer buys two products and watches the saga confirm the order', async () => {
  const { context, page } = await visitor();
  await signIn(page, 'alice');
  await addFromCatalog(page, 'SKU-0001');
  await shot(page, '01-catalog');
  await page.goto('/products/SKU-0004');
  await page.getByLabel('Quantity').fill('2');
  await page.getByRole('button', { name: 'Add to cart' }).click();
  await shot(page, '02-product');
  assert.equal(await page.locator('#cart-count').textContent(), '3');

  await page.goto('/cart');
  await page.locator('#cart-total').waitFor();
  assert.equal(await page.locator('table.cart tbody tr').count(), 2);
  assert.equal(await page.locator('#cart-total').textContent(), '34.88 EUR');
  await shot(page, '03-cart');
  // The cart is kept in the browser: a reload keeps it.
  await page.reload();
  await page.locator('#cart-total').waitFor();
  assert.equal(await page.locator('table.cart tbody tr').count(), 2);

  await page.getByRole('link', { name: 'Checkout' }).click();
  await fillAddress(page);
  await page.getByLabel('Card').selectOption('tok_visa');
  await shot(page, '04-checkout');
  await page.getByRole('button', { name: 'Place order' }).click();
  await page.waitForURL(/\/orders\/[0-9a-f-]{36}$/);
  await waitForStatus(page, 'CONFIRMED');
  assert.deepEqual(await stepEvents(page), [
    'OrderPlaced',
    'StockReserved',
    'PaymentCaptured',
    'ShipmentScheduled',
    'OrderConfirmed',
  ]);
  await shot(page, '05-order-confirmed');
  assert.equal(await page.locator('#cart-count').textContent(), '0');

  // A reload shows the same timeline, from the read model.
  await page.reload();
  await waitForStatus(page, 'CONFIRMED');
  assert.equal((await stepEvents(page)).length, 5);

  await page.getByRole('link', { name: 'My orders' }).click();
  await page.waitForURL(/\/orders$/);
  await page.locator('table.orders tbody tr').first().waitFor();
  assert.equal(await page.locator('table.orders tbody tr').count(), 1);
  await shot(page, '06-my-orders');
  await context.close();
});

test('a declined card cancels the order and the timeline shows the stock given back', async () => {
  const { context, page } = await visitor({ phone: true });
  await signIn(page, 'alice');
  await addFromCatalog(page, 'SKU-0002');
  await page.goto('/checkout');
  await fillAddress(page);
  await page.getByLabel('Card').selectOption('tok_decline');
  await page.getByRole('button', { name: 'Place order' }).click();
  await page.waitForURL(/\/orders\/[0-9a-f-]{36}$/);
  await waitForStatus(page, 'CANCELLED');
  assert.equal(await page.locator('#cancellation-reason').textContent(), 'payment_declined');
  const events = await stepEvents(page);
  assert.deepEqual(events.slice(0, 3), ['OrderPlaced', 'StockReserved', 'PaymentDeclined']);
  assert.deepEqual(events.slice(3).sort(), ['OrderCancelled', 'StockReleased']);
  const compensations = await page
    .locator('#timeline li.step.compensation')
    .evaluateAll((steps) => steps.map((s) => s.dataset.event));
  assert.deepEqual(compensations, ['StockReleased']);
  await shot(page, '07-order-cancelled-phone');
  await context.close();
});

test('a double submit of the checkout places one order', async () => {
  const { context, page } = await visitor();
  await signIn(page, 'bob');
  await page.goto('/orders');
  const before = await page.locator('table.orders tbody tr').count();
  await addFromCatalog(page, 'SKU-0003');
  await page.goto('/checkout');
  await fillAddress(page);
  // Two submissions before the first answer: the script ignores the second
  // while the first is out, and the idempotency key would make a second
  // request the same order anyway.
  await page.locator('#checkout-form').evaluate((form) => {
    form.requestSubmit();
    form.requestSubmit();
  });
  await page.waitForURL(/\/orders\/[0-9a-f-]{36}$/);
  await page.goto('/orders');
  assert.equal(await page.locator('table.orders tbody tr').count(), before + 1);
  await context.close();
});

test('the same form sent twice, even around the script, is one order', async () => {
  const { context, page } = await visitor();
  await signIn(page, 'bob');
  await page.goto('/checkout');
  const key = await page.locator('#checkout-form').getAttribute('data-idempotency-key');
  const body = {
    items: [{ sku: 'SKU-0006', quantity: 1 }],
    payment: { card_token: 'tok_visa' },
    shipping_address: { name: 'Bob', line1: '2 High St', city: 'Paris', postal_code: '75001', country: 'FR' },
  };
  const send = () =>
    page.evaluate(
      async ([body, key]) => {
        const response = await fetch('/api/v1/orders', {
          method: 'POST',
          headers: { 'Content-Type': 'application/json', 'Idempotency-Key': key },
          body: JSON.stringify(body),
        });
        return { status: response.status, order: (await response.json()).order_id };
      },
      [body, key],
    );
  const [first, second] = await Promise.all([send(), send()]);
  assert.equal(first.status, 202);
  assert.equal(second.status, 202);
  assert.equal(first.order, second.order);
  await context.close();
});

test('bad input is answered on the form with the API message', async () => {
  const { context, page } = await visitor();
  await signIn(page, 'alice');
  await addFromCatalog(page, 'SKU-0001');
  await page.goto('/checkout');
  await fillAddress(page, { country: 'XX' });
  await page.getByRole('button', { name: 'Place order' }).click();
  const problem = page.getByRole('alert');
  await problem.filter({ hasText: /country/i }).waitFor();
  assert.match(await problem.textContent(), /XX/);
  assert.match(page.url(), /\/checkout$/);
  await shot(page, '08-checkout-error');
  await context.close();
});

test("another customer's order is a 404 page", async () => {
  const alice = await visitor();
  await signIn(alice.page, 'alice');
  await alice.page.goto('/orders');
  const href = await alice.page.locator('table.orders tbody tr a').first().getAttribute('href');
  assert.match(href, /^\/orders\/[0-9a-f-]{36}$/);
  await alice.context.close();

  const bob = await visitor();
  await signIn(bob.page, 'bob');
  const response = await bob.page.goto(href);
  assert.equal(response.status(), 404);
  assert.equal(await bob.page.locator('h1').textContent(), 'Not found');
  await shot(bob.page, '09-not-found');
  await bob.context.close();
});

test('signed out, the orders send you to sign in, and every page is reachable by keyboard', async () => {
  const { context, page } = await visitor();
  await page.goto('/orders');
  assert.match(page.url(), /\/sign-in\?next=\/orders$/);
  await shot(page, '10-sign-in');
  // Tab from the top: the skip link first, then the navigation.
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Skip to content');
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Shipshape');
  // Signing in with the keyboard alone.
  const button = page.getByRole('button', { name: 'Sign in as alice' });
  await button.focus();
  await page.keyboard.press('Enter');
  await page.waitForURL(/\/orders$/);
  await context.close();
});

test('the operator sees the breakers and sets the payment faults; a customer may not', async () => {
  const { context, page } = await visitor();
  await signIn(page, 'ops');
  await page.getByRole('link', { name: 'Operator' }).click();
  await page.locator('#edges tr[data-process="payment"][data-downstream="psp"]').waitFor();
  assert.equal(
    await page.locator('#edges tr[data-process="payment"][data-downstream="psp"] .breaker').textContent(),
    'closed',
  );
  // The page reads the figures again every 2 s: the rates appear.
  await page.locator('#checkouts-per-sec').filter({ hasText: /^\d/ }).waitFor();
  await shot(page, '11-operator');

  await page.getByLabel(/^Error rate/).fill('1');
  await page.getByRole('button', { name: 'Set faults' }).click();
  await page.locator('#faults-status').filter({ hasText: 'error rate 1' }).waitFor();
  const faults = await page.evaluate(async () => (await fetch('/api/v1/admin/psp/faults')).json());
  assert.deepEqual(faults, { latency_ms: 0, error_rate: 1, lose_response_rate: 0 });
  // Out of bounds: the API's message, on the form.
  await page.getByLabel(/^Error rate/).fill('2');
  await page.getByRole('button', { name: 'Set faults' }).click();
  await page.getByRole('alert').filter({ hasText: /error_rate/ }).waitFor();
  await page.getByLabel(/^Error rate/).fill('0');
  await page.getByRole('button', { name: 'Set faults' }).click();
  await page.locator('#faults-status').filter({ hasText: 'error rate 0' }).waitFor();
  await context.close();

  const customer = await visitor();
  await signIn(customer.page, 'bob');
  const response = await customer.page.goto('/operator');
  assert.equal(response.status(), 403);
  assert.equal(await customer.page.getByRole('link', { name: 'Operator' }).count(), 0);
  await customer.context.close();
});

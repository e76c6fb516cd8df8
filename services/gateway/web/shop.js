// The web shop's script: the cart (kept in this browser), adding to it,
// live availability, the checkout's submission, the live saga timeline and
// signing in and out. The pages work from the server's HTML; this adds what
// needs the browser. No framework, no build step.
'use strict';

(() => {
  const CART_KEY = 'shipshape.cart';
  const WHOLE_UNIT_CURRENCIES = ['BIF', 'CLP', 'ISK', 'JPY', 'KRW', 'PYG', 'UGX', 'VND'];

  /** The cart: `{sku: quantity}`. Whatever is stored that is not one is no cart. */
  function readCart() {
    try {
      const cart = JSON.parse(localStorage.getItem(CART_KEY) || '{}');
      if (cart === null || typeof cart !== 'object' || Array.isArray(cart)) return {};
      return Object.fromEntries(
        Object.entries(cart).filter(([, q]) => Number.isInteger(q) && q >= 1 && q <= 100),
      );
    } catch {
      return {};
    }
  }

  function writeCart(cart) {
    localStorage.setItem(CART_KEY, JSON.stringify(cart));
    showCartCount();
  }

  function showCartCount() {
    const count = Object.values(readCart()).reduce((sum, q) => sum + q, 0);
    const badge = document.getElementById('cart-count');
    if (badge) badge.textContent = String(count);
  }

  /** `{amount_minor, currency}` as people read it, as the server writes it. */
  function price(money) {
    if (WHOLE_UNIT_CURRENCIES.includes(money.currency)) {
      return `${money.amount_minor} ${money.currency}`;
    }
    const sign = money.amount_minor < 0 ? '-' : '';
    const minor = Math.abs(money.amount_minor);
    const cents = String(minor % 100).padStart(2, '0');
    return `${sign}${Math.floor(minor / 100)}.${cents} ${money.currency}`;
  }

  /** The message of an API error answer, for a person. */
  async function errorMessage(response) {
    try {
      const body = await response.json();
      if (body && body.error && body.error.message) return body.error.message;
    } catch {
      // Not the API's JSON: say what the status says.
    }
    return `The request failed (${response.status} ${response.statusText}).`;
  }

  async function products() {
    const response = await fetch('/api/v1/products', { credentials: 'same-origin' });
    if (!response.ok) throw new Error(await errorMessage(response));
    const body = await response.json();
    return new Map(body.products.map((p) => [p.sku, p]));
  }

  function element(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    node.append(...children);
    return node;
  }

  // Adding to the cart, on the catalog and the product pages.
  for (const button of document.querySelectorAll('button.add-to-cart')) {
    button.addEventListener('click', () => {
      let quantity = 1;
      if (button.dataset.quantityFrom) {
        quantity = Number(document.getElementById(button.dataset.quantityFrom).value);
        if (!Number.isInteger(quantity) || quantity < 1 || quantity > 100) {
          alertNear(button, 'The quantity must be a whole number from 1 to 100.');
          return;
        }
      }
      const cart = readCart();
      cart[button.dataset.sku] = Math.min(100, (cart[button.dataset.sku] || 0) + quantity);
      writeCart(cart);
      alertNear(button, `Added ${quantity} to the cart.`);
    });
  }

  /** A short message beside `node`, read out by screen readers. */
  function alertNear(node, text) {
    let note = node.parentElement.querySelector('.note');
    if (!note) {
      note = element('span', { class: 'note', role: 'status' });
      node.after(note);
    }
    note.textContent = text;
  }

  // Availability, kept live on the pages that show it.
  const availability = document.querySelectorAll('.available[data-sku]');
  if (availability.length > 0) {
    setInterval(async () => {
      let catalog;
      try {
        catalog = await products();
      } catch {
        return;
      }
      for (const node of availability) {
        const product = catalog.get(node.dataset.sku);
        if (!product) continue;
        node.textContent = product.available === 0 ? 'Out of stock' : `${product.available} in stock`;
        for (const button of document.querySelectorAll(`button.add-to-cart[data-sku="${CSS.escape(node.dataset.sku)}"]`)) {
          button.disabled = product.available === 0;
        }
      }
    }, 5000);
  }

  /** Renders under way, per container: only the latest one draws. */
  const renders = new WeakMap();

  /** The cart as a table of lines with quantities to change, and its total. */
  async function renderCart(container, editable) {
    const render = (renders.get(container) || 0) + 1;
    renders.set(container, render);
    const cart = readCart();
    const skus = Object.keys(cart);
    const checkoutLink = document.getElementById('to-checkout');
    if (skus.length === 0) {
      container.replaceChildren();
      container.append(element('p', { class: 'empty' }, container.dataset.empty || 'Your cart is empty.'));
      if (checkoutLink) checkoutLink.hidden = true;
      return [];
    }
    if (checkoutLink) checkoutLink.hidden = false;
    let catalog;
    try {
      catalog = await products();
    } catch (error) {
      if (renders.get(container) !== render) return [];
      container.replaceChildren(element('p', { class: 'error', role: 'alert' }, error.message));
      return [];
    }
    // A later render started meanwhile: it draws, not this one.
    if (renders.get(container) !== render) return [];
    container.replaceChildren();
    const table = element('table', { class: 'cart' });
    table.append(element('thead', {}, element('tr', {},
      element('th', { scope: 'col' }, 'Item'),
      element('th', { scope: 'col' }, 'Quantity'),
      element('th', { scope: 'col' }, 'Price'),
      ...(editable ? [element('th', { scope: 'col' }, element('span', { class: 'visually-hidden' }, 'Remove'))] : []),
    )));
    const body = element('tbody');
    let total = 0;
    let currency = 'EUR';
    const lines = [];
    for (const sku of skus) {
      const product = catalog.get(sku);
      if (!product) continue;
      const quantity = cart[sku];
      total += product.price.amount_minor * quantity;
      currency = product.price.currency;
      lines.push({ sku, quantity });
      const row = element('tr', { 'data-sku': sku });
      row.append(element('td', {}, element('a', { href: `/products/${sku}` }, product.name)));
      if (editable) {
        const id = `quantity-${sku}`;
        const input = element('input', { id, type: 'number', min: '1', max: '100', value: String(quantity), inputmode: 'numeric' });
        input.addEventListener('change', () => {
          const next = Number(input.value);
          const updated = readCart();
          if (Number.isInteger(next) && next >= 1 && next <= 100) updated[sku] = next;
          writeCart(updated);
          renderCart(container, editable);
        });
        row.append(element('td', {}, element('label', { for: id, class: 'visually-hidden' }, `Quantity of ${product.name}`), input));
      } else {
        row.append(element('td', {}, String(quantity)));
      }
      row.append(element('td', {}, price({ amount_minor: product.price.amount_minor * quantity, currency })));
      if (editable) {
        const remove = element('button', { type: 'button', class: 'remove' }, 'Remove');
        remove.setAttribute('aria-label', `Remove ${product.name}`);
        remove.addEventListener('click', () => {
          const updated = readCart();
          delete updated[sku];
          writeCart(updated);
          renderCart(container, editable);
        });
        row.append(element('td', {}, remove));
      }
      body.append(row);
    }
    table.append(body);
    table.append(element('tfoot', {}, element('tr', {},
      element('th', { scope: 'row', colspan: '2' }, 'Total'),
      element('td', { id: 'cart-total' }, price({ amount_minor: total, currency })),
    )));
    container.append(table);
    return lines;
  }

  const cartContainer = document.getElementById('cart');
  if (cartContainer) renderCart(cartContainer, true);

  // The checkout: one order per form, whatever the clicks.
  const form = document.getElementById('checkout-form');
  if (form) {
    const summary = document.getElementById('checkout-summary');
    renderCart(summary, false);
    const problem = document.getElementById('form-error');
    const submit = document.getElementById('place-order');
    let placing = false;
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      if (placing) return;
      problem.textContent = '';
      const items = Object.entries(readCart()).map(([sku, quantity]) => ({ sku, quantity }));
      if (items.length === 0) {
        problem.textContent = 'Your cart is empty.';
        return;
      }
      const field = (name) => form.elements[name].value;
      const body = {
        items,
        payment: { card_token: field('card') },
        shipping_address: {
          name: field('name'),
          line1: field('line1'),
          line2: field('line2'),
          city: field('city'),
          postal_code: field('postal_code'),
          country: field('country').trim().toUpperCase(),
        },
      };
      placing = true;
      submit.disabled = true;
      try {
        const response = await fetch('/api/v1/orders', {
          method: 'POST',
          credentials: 'same-origin',
          headers: {
            'Content-Type': 'application/json',
            // The same for every submission of this form: a retry or a
            // second click is answered with the first order.
            'Idempotency-Key': form.dataset.idempotencyKey,
          },
          body: JSON.stringify(body),
        });
        if (response.status === 401) {
          location.assign('/sign-in?next=/checkout');
          return;
        }
        if (!response.ok) {
          problem.textContent = await errorMessage(response);
          return;
        }
        const order = await response.json();
        localStorage.removeItem(CART_KEY);
        location.assign(`/orders/${order.order_id}`);
      } catch (error) {
        problem.textContent = `The order could not be sent: ${error.message}`;
      } finally {
        placing = false;
        submit.disabled = false;
      }
    });
  }

  // The saga, live: each event of the stream says the timeline grew; the
  // server renders the steps again, so the page never disagrees with it.
  const order = document.getElementById('order');
  const timeline = document.getElementById('timeline');
  if (order && timeline && window.EventSource) {
    const id = order.dataset.orderId;
    let fetching = false;
    let again = false;
    const refresh = async () => {
      if (fetching) {
        again = true;
        return;
      }
      fetching = true;
      try {
        do {
          again = false;
          const response = await fetch(`/orders/${id}/steps`, { credentials: 'same-origin', redirect: 'error' });
          // Only the server's own fragment of this order's steps goes in.
          if (response.ok && response.headers.get('content-type')?.startsWith('text/html')) {
            timeline.innerHTML = await response.text();
          }
        } while (again);
      } finally {
        fetching = false;
      }
    };
    const stream = new EventSource(`/api/v1/orders/${id}/timeline/stream`);
    stream.addEventListener('timeline', refresh);
    window.addEventListener('pagehide', () => stream.close());
  }

  // Signing in (the demo accounts) and out.
  const accounts = document.querySelector('ul.accounts');
  for (const button of document.querySelectorAll('button.sign-in')) {
    button.addEventListener('click', async () => {
      const response = await fetch(`/api/v1/demo/sign-in/${encodeURIComponent(button.dataset.customer)}`, {
        method: 'POST',
        credentials: 'same-origin',
      });
      if (response.ok) {
        location.assign(accounts.dataset.next || '/');
      } else {
        document.getElementById('form-error').textContent = await errorMessage(response);
      }
    });
  }
  const signOut = document.getElementById('sign-out');
  if (signOut) {
    signOut.addEventListener('click', async () => {
      await fetch('/api/v1/sign-out', { method: 'POST', credentials: 'same-origin' });
      location.assign('/');
    });
  }

  // The operator page: the figures every 2 s, and the PSP's faults.
  const operations = document.getElementById('operations');
  if (operations) {
    const number = (value, decimals) => (value === null || value === undefined ? '–' : value.toFixed(decimals));
    setInterval(async () => {
      const response = await fetch('/api/v1/admin/operations', { credentials: 'same-origin' });
      if (!response.ok) return;
      const figures = await response.json();
      document.getElementById('checkouts-per-sec').textContent = number(figures.checkouts_per_sec, 1);
      document.getElementById('checkout-p99').textContent = number(figures.checkout_p99_ms, 0);
      document.getElementById('window').textContent = number(figures.window_secs, 1);
      document.getElementById('outcomes').replaceChildren(
        ...Object.entries(figures.outcomes).map(([outcome, count]) =>
          element('li', { 'data-outcome': outcome }, `${outcome}: ${count}`)),
      );
      document.getElementById('edges').replaceChildren(
        ...figures.edges.map((edge) => element('tr', { 'data-process': edge.process, 'data-downstream': edge.downstream },
          element('td', {}, edge.process),
          element('td', {}, edge.downstream),
          element('td', { class: 'breaker', 'data-breaker': edge.breaker }, edge.breaker),
          element('td', {}, String(edge.bulkhead_in_use)))),
      );
    }, 2000);
  }
  const faultsForm = document.getElementById('faults-form');
  if (faultsForm) {
    faultsForm.addEventListener('submit', async (event) => {
      event.preventDefault();
      const problem = document.getElementById('form-error');
      const status = document.getElementById('faults-status');
      problem.textContent = '';
      status.textContent = '';
      const value = (name) => Number(faultsForm.elements[name].value);
      const response = await fetch('/api/v1/admin/psp/faults', {
        method: 'PUT',
        credentials: 'same-origin',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({
          latency_ms: value('latency_ms'),
          error_rate: value('error_rate'),
          lose_response_rate: value('lose_response_rate'),
        }),
      });
      if (response.ok) {
        const set = await response.json();
        status.textContent = `Set: ${set.latency_ms} ms added, error rate ${set.error_rate}, lost replies ${set.lose_response_rate}.`;
      } else {
        problem.textContent = await errorMessage(response);
      }
    });
  }

  showCartCount();
})();

/**
 * What is running and what it costs: the Endpoints section (the local emulator and
 * rpremote's RunPod endpoints, with Delete), the Pods section (Stop, Terminate) and the Cost
 * line (today, this month, burn rate now).
 */
import { ICost, IEndpoint, IEndpoints, IPod, IPods, requestAPI } from './api';
import { confirmButton, h, placeChildren, setAttr, setText } from './dom';
import { duration, usd } from './format';

abstract class Section {
  readonly node: HTMLElement;
  protected readonly body: HTMLElement;
  protected readonly error: HTMLElement;

  constructor(name: string, title: string) {
    this.error = h('p', { class: 'rp-error', role: 'status', hidden: true });
    this.body = h('div', { class: 'rp-section-body' }, h('p', { class: 'rp-empty' }, 'Loading…'));
    this.node = h(
      'section',
      { class: 'rp-section', 'data-section': name },
      h('h3', { class: 'rp-section-title' }, title),
      this.error,
      this.body
    );
  }

  abstract refresh(): Promise<void>;

  protected showError(message: string | null): void {
    setText(this.error, message ?? '');
    this.error.hidden = message === null;
    const loading = this.body.querySelector(':scope > .rp-empty');
    if (message !== null && loading && loading.textContent === 'Loading…') {
      setText(loading, 'Could not be read.');
    }
  }
}

function workersText(e: IEndpoint): string {
  const w = e.workers ?? {};
  const q = e.queue ?? {};
  return (
    `workers ${w.idle ?? 0} idle · ${w.running ?? 0} running · ${w.initializing ?? 0} starting` +
    ` — queue ${q.inQueue ?? 0} waiting · ${q.inProgress ?? 0} in progress`
  );
}

class EndpointRow {
  readonly node: HTMLLIElement;
  private readonly title: HTMLElement;
  private readonly sub: HTMLElement;
  private readonly detail: HTMLElement;

  constructor(
    readonly id: string,
    target: 'local' | 'runpod',
    onDelete: (id: string, target: string) => Promise<void>
  ) {
    this.title = h('span', { class: 'rp-row-title' });
    this.sub = h('span', { class: 'rp-row-sub' });
    this.detail = h('span', { class: 'rp-row-detail' });
    const remove = confirmButton('Delete', 'delete', 'delete this endpoint', () => onDelete(id, target));
    this.node = h(
      'li',
      { class: 'rp-row', 'data-endpoint-id': id, 'data-target': target },
      this.title,
      this.sub,
      h('span', { class: 'rp-actions' }, remove),
      this.detail
    );
  }

  update(e: IEndpoint): void {
    const price = e.usd_per_h !== undefined && e.usd_per_h !== null ? ` · ${usd(e.usd_per_h)}/h` : '';
    setText(this.title, e.name || e.id);
    setAttr(this.title, 'title', e.name && e.name !== e.id ? `${e.name} (${e.id})` : e.id);
    setText(this.sub, `${e.gpu || e.pool || 'CPU'}${price}`);
    setAttr(this.sub, 'title', price ? 'the GPU and the price of one running worker' : null);
    setText(this.detail, workersText(e));
  }
}

export class EndpointsSection extends Section {
  private readonly localLine = h('p', { class: 'rp-line', 'data-part': 'local' });
  private readonly localList = h('ul', { class: 'rp-rows', 'aria-label': 'local endpoints' });
  private readonly runpodLine = h('p', { class: 'rp-line', 'data-part': 'runpod' });
  private readonly runpodList = h('ul', { class: 'rp-rows', 'aria-label': 'RunPod endpoints' });
  private readonly rows = new Map<string, EndpointRow>();

  constructor() {
    super('endpoints', 'Endpoints');
  }

  async refresh(): Promise<void> {
    let data: IEndpoints;
    try {
      data = await requestAPI<IEndpoints>('endpoints');
    } catch (err) {
      this.showError(`Endpoints: ${(err as Error).message}`);
      return;
    }
    this.showError(null);
    if (!this.body.contains(this.localLine)) {
      this.body.replaceChildren(this.localLine, this.localList, this.runpodLine, this.runpodList);
    }
    const local = data.local ?? { running: false, url: null, endpoints: [], error: null };
    const localText = local.error
      ? `Local emulator: ${local.error}`
      : local.running
        ? `Local emulator running at ${local.url ?? '?'}` + (local.endpoints?.length ? '' : ' — no endpoints yet')
        : 'Local emulator not running (it starts with the first local call, or `rpremote serve`).';
    setText(this.localLine, localText);
    this.localLine.classList.toggle('rp-error-text', !!local.error);
    this.fill(this.localList, 'local', local.running ? local.endpoints ?? [] : []);

    const runpod = data.runpod ?? { configured: false, endpoints: [], error: null };
    // No key is a choice, not a failure: said plainly, not in red.
    const runpodText = !runpod.configured
      ? `RunPod: ${runpod.error || 'no API key configured (RUNPOD_API_KEY).'}`
      : runpod.error
        ? `RunPod: ${runpod.error}`
        : runpod.endpoints?.length
          ? 'RunPod endpoints (rpremote’s)'
          : 'RunPod: no rpremote endpoints.';
    setText(this.runpodLine, runpodText);
    this.runpodLine.classList.toggle('rp-error-text', !!runpod.configured && !!runpod.error);
    this.fill(this.runpodList, 'runpod', runpod.endpoints ?? []);
  }

  private fill(list: HTMLElement, target: 'local' | 'runpod', endpoints: IEndpoint[]): void {
    const nodes: HTMLElement[] = [];
    for (const e of endpoints) {
      const key = `${target}:${e.id}`;
      let row = this.rows.get(key);
      if (!row) {
        row = new EndpointRow(e.id, target, (id, t) => this.remove(id, t));
        this.rows.set(key, row);
      }
      row.update(e);
      nodes.push(row.node);
    }
    placeChildren(list, nodes);
  }

  private async remove(id: string, target: string): Promise<void> {
    try {
      await requestAPI(`endpoints/${encodeURIComponent(id)}?target=${encodeURIComponent(target)}`, { method: 'DELETE' });
      this.showError(null);
      await this.refresh();
    } catch (err) {
      this.showError(`Delete ${id}: ${(err as Error).message}`);
    }
  }
}

class PodRow {
  readonly node: HTMLLIElement;
  private readonly title: HTMLElement;
  private readonly sub: HTMLElement;
  private readonly detail: HTMLElement;
  private readonly stop: HTMLButtonElement;

  constructor(
    readonly id: string,
    onAction: (id: string, action: 'stop' | 'terminate') => Promise<void>
  ) {
    this.title = h('span', { class: 'rp-row-title' });
    this.sub = h('span', { class: 'rp-row-sub' });
    this.detail = h('span', { class: 'rp-row-detail' });
    this.stop = confirmButton('Stop', 'stop', 'stop this Pod (its disk is kept)', () => onAction(id, 'stop'));
    const terminate = confirmButton('Terminate', 'terminate', 'terminate this Pod (its disk is deleted)', () =>
      onAction(id, 'terminate')
    );
    this.node = h(
      'li',
      { class: 'rp-row', 'data-pod-id': id },
      this.title,
      this.sub,
      h('span', { class: 'rp-actions' }, this.stop, terminate),
      this.detail
    );
  }

  update(p: IPod): void {
    const gpu = p.gpu ? `${p.count && p.count > 1 ? `${p.count}× ` : ''}${p.gpu}` : 'CPU';
    setText(this.title, p.name || p.id);
    setAttr(this.title, 'title', p.url ? `${p.id} — ${p.url}` : p.id);
    setAttr(this.node, 'data-status', p.status ?? '');
    setText(this.sub, (p.status ?? 'unknown').toLowerCase());
    const up = p.uptime_s ? `up ${duration(p.uptime_s)} · ` : '';
    setText(this.detail, `${up}${gpu} · ${usd(p.usd_per_h)}/h · so far ${usd(p.cost_so_far_usd)}`);
    const running = (p.status ?? '').toUpperCase() === 'RUNNING';
    setAttr(this.stop, 'data-hidden', running ? null : '');
    this.stop.tabIndex = running ? 0 : -1;
  }
}

export class PodsSection extends Section {
  private readonly list = h('ul', { class: 'rp-rows', 'aria-label': 'Pods' });
  private readonly empty = h('p', { class: 'rp-empty' });
  private readonly rows = new Map<string, PodRow>();

  constructor() {
    super('pods', 'Pods');
  }

  async refresh(): Promise<void> {
    let data: IPods;
    try {
      data = await requestAPI<IPods>('pods');
    } catch (err) {
      this.showError(`Pods: ${(err as Error).message}`);
      return;
    }
    // No RunPod key: no Pods to show, said plainly (not in red).
    const noKey = data.configured === false || (!!data.error && !data.pods?.length && /API key/i.test(data.error));
    this.showError(data.error && !noKey ? `Pods: ${data.error}` : null);
    if (!this.body.contains(this.list)) {
      this.body.replaceChildren(this.empty, this.list);
    }
    const nodes: HTMLElement[] = [];
    for (const p of data.pods ?? []) {
      let row = this.rows.get(p.id);
      if (!row) {
        row = new PodRow(p.id, (id, action) => this.act(id, action));
        this.rows.set(p.id, row);
      }
      row.update(p);
      nodes.push(row.node);
    }
    placeChildren(this.list, nodes);
    setText(this.empty, nodes.length ? '' : noKey ? `RunPod: ${data.error || 'no API key configured.'}` : 'No rpremote Pods.');
    this.empty.hidden = nodes.length > 0;
  }

  private async act(id: string, action: 'stop' | 'terminate'): Promise<void> {
    try {
      await requestAPI(`pods/${encodeURIComponent(id)}/${action}`, { method: 'POST' });
      this.showError(null);
      await this.refresh();
    } catch (err) {
      this.showError(`${action === 'stop' ? 'Stop' : 'Terminate'} ${id}: ${(err as Error).message}`);
    }
  }
}

export class CostSection extends Section {
  private readonly today = h('span', { class: 'rp-figure', 'data-cost': 'today' });
  private readonly month = h('span', { class: 'rp-figure', 'data-cost': 'month' });
  private readonly burn = h('span', { class: 'rp-figure', 'data-cost': 'burn' });

  constructor() {
    super('cost', 'Cost');
  }

  async refresh(): Promise<void> {
    let data: ICost;
    try {
      data = await requestAPI<ICost>('cost');
    } catch (err) {
      this.showError(`Cost: ${(err as Error).message}`);
      return;
    }
    this.showError(null);
    if (!this.body.contains(this.today)) {
      this.body.replaceChildren(
        h(
          'dl',
          { class: 'rp-cost' },
          h('div', {}, h('dt', {}, 'today'), h('dd', {}, this.today)),
          h('div', {}, h('dt', {}, 'this month'), h('dd', {}, this.month)),
          h('div', {}, h('dt', {}, 'burn rate'), h('dd', {}, this.burn))
        )
      );
      this.node.title = 'Estimated from the job journal at RunPod prices (local jobs: what they would cost)' +
        ' and, for the burn rate, from running Pods and busy workers.';
    }
    setText(this.today, usd(data.today_usd));
    setText(this.month, usd(data.month_usd));
    setText(this.burn, `${usd(data.burn_usd_per_h)}/h`);
  }
}

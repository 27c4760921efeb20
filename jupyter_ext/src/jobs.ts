/**
 * The Jobs section: every job in the journal, newest first, with filters by status and by
 * source (notebook, script, CLI) and a Cancel button on jobs that can still be cancelled.
 * Rows are keyed by job id and updated in place, each row a fixed height.
 */
import { IJob, IJobList, query, requestAPI } from './api';
import { CANCELLABLE, STATUS_CHOICES, shortSource, statusWords, timing, usd, where } from './format';
import { h, placeChildren, setAttr, setText } from './dom';

const LIMIT = 200;

class JobRow {
  readonly node: HTMLLIElement;
  private readonly open: HTMLButtonElement;
  private readonly cost: HTMLElement;
  private readonly state: HTMLElement;
  private readonly place: HTMLElement;
  private readonly time: HTMLElement;
  private readonly cancel: HTMLButtonElement;
  job: IJob;

  constructor(job: IJob, onOpen: (id: string) => void, onCancel: (row: JobRow) => void) {
    this.job = job;
    this.open = h('button', { class: 'rp-job-name', type: 'button', title: 'show logs and details' });
    this.cost = h('span', { class: 'rp-job-cost' });
    this.state = h('span', { class: 'rp-job-state' });
    this.place = h('span', { class: 'rp-job-where' });
    this.time = h('span', { class: 'rp-job-time' });
    this.cancel = h(
      'button',
      { class: 'rp-button rp-job-cancel', 'data-action': 'cancel', type: 'button', title: 'cancel this job' },
      'Cancel'
    );
    this.node = h(
      'li',
      { class: 'rp-job', 'data-job-id': job.id },
      h('span', { class: 'rp-dot', 'aria-hidden': 'true' }),
      h('div', { class: 'rp-job-line' }, this.open, this.cost),
      h('div', { class: 'rp-job-line' }, this.state, this.cancel),
      h('div', { class: 'rp-job-line rp-job-sub' }, this.place, this.time)
    );
    this.node.addEventListener('click', () => onOpen(this.job.id));
    this.open.addEventListener('click', event => {
      event.stopPropagation();
      onOpen(this.job.id);
    });
    this.cancel.addEventListener('click', event => {
      event.stopPropagation();
      onCancel(this);
    });
  }

  update(job: IJob, now: number): void {
    this.job = job;
    const [css, words] = statusWords(job);
    setAttr(this.node, 'data-status', job.status ?? '');
    setAttr(this.node, 'data-state', css);
    const kind = job.kind && job.kind !== 'call' ? ` (${job.kind})` : '';
    setText(this.open, `${job.name || job.id}${kind}`);
    setAttr(this.open, 'title', `${job.id}: show logs and details`);
    setText(this.cost, usd(job.cost_usd));
    setText(this.state, words);
    const src = shortSource(job.source);
    setText(this.place, [where(job), job.gpu || 'CPU', src].filter(Boolean).join(' · '));
    setText(this.time, timing(job, now));
    const cancellable = CANCELLABLE.has(job.status ?? '');
    // Hidden, not removed: the row keeps its size when the button goes.
    setAttr(this.cancel, 'data-hidden', cancellable ? null : '');
    this.cancel.disabled = !cancellable || this.cancel.classList.contains('rp-busy');
    this.cancel.tabIndex = cancellable ? 0 : -1;
    setAttr(this.node, 'title', job.error ? job.error : null);
  }

  busy(on: boolean): void {
    this.cancel.classList.toggle('rp-busy', on);
    this.cancel.disabled = on;
    setText(this.cancel, on ? 'Cancelling' : 'Cancel');
  }
}

export class JobsSection {
  readonly node: HTMLElement;
  private readonly list: HTMLUListElement;
  private readonly empty: HTMLElement;
  private readonly error: HTMLElement;
  private readonly statusFilter: HTMLSelectElement;
  private readonly sourceFilter: HTMLSelectElement;
  private readonly rows = new Map<string, JobRow>();
  private clockSkew = 0; // server now - local now, seconds
  private loaded = false;

  constructor(
    private readonly onOpen: (id: string) => void,
    private readonly onChange: () => void
  ) {
    this.statusFilter = h('select', { class: 'rp-select', 'aria-label': 'filter jobs by status', 'data-filter': 'status' });
    for (const [value, label] of STATUS_CHOICES) {
      this.statusFilter.append(h('option', { value }, label));
    }
    this.sourceFilter = h('select', { class: 'rp-select', 'aria-label': 'filter jobs by source', 'data-filter': 'source' });
    this.sourceFilter.append(h('option', { value: '' }, 'every source'));
    for (const select of [this.statusFilter, this.sourceFilter]) {
      select.addEventListener('change', () => this.onChange());
    }
    this.list = h('ul', { class: 'rp-jobs', 'aria-label': 'jobs' });
    this.empty = h('p', { class: 'rp-empty' }, 'Loading jobs…');
    this.error = h('p', { class: 'rp-error', role: 'status', hidden: true });
    this.node = h(
      'section',
      { class: 'rp-section', 'data-section': 'jobs' },
      h('h3', { class: 'rp-section-title' }, 'Jobs'),
      h('div', { class: 'rp-filters' }, this.statusFilter, this.sourceFilter),
      this.error,
      this.empty,
      this.list
    );
  }

  async refresh(): Promise<void> {
    const path = 'jobs' + query({ status: this.statusFilter.value, source: this.sourceFilter.value, limit: LIMIT });
    try {
      const data = await requestAPI<IJobList>(path);
      this.clockSkew = (data.now ?? Date.now() / 1000) - Date.now() / 1000;
      this.render(data);
      this.showError(null);
    } catch (err) {
      this.showError(`Jobs: ${(err as Error).message}`);
      if (!this.loaded) {
        setText(this.empty, 'The job list could not be read.');
      }
    }
  }

  /** Ticks elapsed times between polls. */
  tick(): void {
    const now = Date.now() / 1000 + this.clockSkew;
    for (const row of this.rows.values()) {
      row.update(row.job, now);
    }
  }

  async cancel(row: JobRow): Promise<void> {
    row.busy(true);
    try {
      const r = await requestAPI<{ id: string; status: string }>(`jobs/${encodeURIComponent(row.job.id)}/cancel`, {
        method: 'POST'
      });
      row.update({ ...row.job, status: r.status ?? row.job.status }, Date.now() / 1000 + this.clockSkew);
      this.showError(null);
    } catch (err) {
      this.showError(`Cancel ${row.job.id}: ${(err as Error).message}`);
    } finally {
      row.busy(false);
    }
  }

  private render(data: IJobList): void {
    this.loaded = true;
    this.syncSources(data.sources ?? []);
    const now = data.now ?? Date.now() / 1000;
    const order: HTMLElement[] = [];
    const seen = new Set<string>();
    for (const job of data.jobs ?? []) {
      let row = this.rows.get(job.id);
      if (!row) {
        row = new JobRow(job, this.onOpen, r => void this.cancel(r));
        this.rows.set(job.id, row);
      }
      row.update(job, now);
      order.push(row.node);
      seen.add(job.id);
    }
    for (const id of Array.from(this.rows.keys())) {
      if (!seen.has(id)) {
        this.rows.delete(id);
      }
    }
    placeChildren(this.list, order);
    const filtered = this.statusFilter.value || this.sourceFilter.value;
    setText(
      this.empty,
      order.length
        ? ''
        : filtered
          ? 'No job matches these filters.'
          : 'No jobs yet. Call an @remote function or run a %%runpod cell and it shows here.'
    );
    this.empty.hidden = order.length > 0;
  }

  private syncSources(sources: string[]): void {
    const want = ['', ...sources];
    const current = this.sourceFilter.value;
    if (current && !want.includes(current)) {
      want.push(current); // keep the chosen filter even when it has no job right now
    }
    const have = Array.from(this.sourceFilter.options).map(o => o.value);
    if (have.join('\n') === want.join('\n')) {
      return;
    }
    this.sourceFilter.replaceChildren(
      ...want.map(v => h('option', { value: v, title: v }, v ? shortSource(v) : 'every source'))
    );
    this.sourceFilter.value = current;
  }

  private showError(message: string | null): void {
    setText(this.error, message ?? '');
    this.error.hidden = message === null;
  }
}

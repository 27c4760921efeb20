/**
 * One job in detail: its status and times, cost, endpoint, where it came from (a link that
 * opens the notebook), the error's first line and traceback for a failed job, and its logs,
 * appended live from `jobs/{id}/logs?offset=N` while it runs.
 */
import { PageConfig } from '@jupyterlab/coreutils';

import { IJobDetail, ILogChunk, requestAPI } from './api';
import { h, setAttr, setText } from './dom';
import { CANCELLABLE, FINAL, clock, firstLine, statusWords, timing, usd, where } from './format';

/** The most log text kept in the page; older text is dropped with a note. */
const LOG_KEEP_CHARS = 256 * 1024;

export class JobDetail {
  readonly node: HTMLElement;
  private readonly title = h('h3', { class: 'rp-detail-title' });
  private readonly status = h('p', { class: 'rp-detail-status', 'data-role': 'status' });
  private readonly facts = h('dl', { class: 'rp-facts' });
  private readonly error = h('div', { class: 'rp-detail-error', 'data-role': 'error', hidden: true });
  private readonly errorLine = h('p', { class: 'rp-error-line' });
  private readonly traceback = h('pre', { class: 'rp-traceback', 'data-role': 'traceback' });
  private readonly logs = h('pre', { class: 'rp-logs', 'data-role': 'logs', tabindex: 0, 'aria-label': 'job logs' });
  private readonly logNote = h('p', { class: 'rp-note', 'data-role': 'log-note' });
  private readonly problem = h('p', { class: 'rp-error', role: 'status', hidden: true });
  private readonly cancelButton: HTMLButtonElement;
  private offset = 0;
  private logsDone = false;
  private dropped = false;
  private kept = 0; // characters of log text in the page
  private busy = false;

  constructor(
    readonly jobId: string,
    onBack: () => void,
    private readonly openSource: (path: string) => void
  ) {
    const back = h('button', { class: 'rp-button rp-back', type: 'button', 'data-action': 'back' }, '← All jobs');
    back.addEventListener('click', onBack);
    this.cancelButton = h(
      'button',
      { class: 'rp-button', type: 'button', 'data-action': 'cancel', title: 'cancel this job', hidden: true },
      'Cancel'
    );
    this.cancelButton.addEventListener('click', () => void this.cancel());
    this.error.append(this.errorLine, h('details', {}, h('summary', {}, 'Traceback'), this.traceback));
    this.node = h(
      'div',
      { class: 'rp-detail', 'data-job-id': jobId },
      h('div', { class: 'rp-detail-bar' }, back, this.cancelButton),
      this.title,
      this.status,
      this.problem,
      this.facts,
      this.error,
      h('h4', { class: 'rp-section-title' }, 'Logs'),
      this.logNote,
      this.logs
    );
    setText(this.title, jobId);
    setText(this.status, 'Loading…');
  }

  /** One poll: the job, then any new log text. */
  async refresh(): Promise<void> {
    try {
      const job = await requestAPI<IJobDetail>(`jobs/${encodeURIComponent(this.jobId)}`);
      this.render(job);
      this.showProblem(null);
    } catch (err) {
      this.showProblem(`Job ${this.jobId}: ${(err as Error).message}`);
    }
    if (!this.logsDone) {
      await this.pullLogs();
    }
  }

  private async pullLogs(): Promise<void> {
    // Several chunks in one poll when a job prints a lot, but never an endless loop.
    for (let i = 0; i < 8; i++) {
      let chunk: ILogChunk;
      try {
        chunk = await requestAPI<ILogChunk>(`jobs/${encodeURIComponent(this.jobId)}/logs?offset=${this.offset}`);
      } catch (err) {
        setText(this.logNote, `Logs: ${(err as Error).message}`);
        return;
      }
      const grew = chunk.offset > this.offset && !!chunk.text;
      if (chunk.text) {
        this.append(chunk.text);
      }
      this.offset = Math.max(this.offset, chunk.offset ?? this.offset);
      if (chunk.done) {
        this.logsDone = true;
      }
      this.updateLogNote();
      if (!grew || chunk.done) {
        return;
      }
    }
  }

  private append(text: string): void {
    const pre = this.logs;
    const atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 24;
    this.kept += text.length;
    if (this.kept > LOG_KEEP_CHARS) {
      // Rewritten only when it overflows; otherwise appended, so a selection in the logs stays.
      let all = (pre.textContent ?? '') + text;
      all = all.slice(all.length - LOG_KEEP_CHARS);
      all = all.slice(all.indexOf('\n') + 1);
      pre.textContent = all;
      this.kept = all.length;
      this.dropped = true;
    } else {
      pre.append(document.createTextNode(text));
    }
    if (atBottom) {
      pre.scrollTop = pre.scrollHeight;
    }
  }

  private updateLogNote(): void {
    const parts: string[] = [];
    if (this.dropped) {
      parts.push(`Older lines dropped: the last ${Math.round(LOG_KEEP_CHARS / 1024)} KiB are shown.`);
    }
    if (!this.logs.textContent) {
      parts.push(this.logsDone ? 'This job printed nothing.' : 'No output yet.');
    } else if (!this.logsDone) {
      parts.push('Live: new lines appear as the job prints them.');
    }
    setText(this.logNote, parts.join(' '));
    this.logs.hidden = !this.logs.textContent && this.logsDone; // no empty box for a silent job
  }

  private render(job: IJobDetail): void {
    const now = Date.now() / 1000;
    const [css, words] = statusWords(job);
    setText(this.title, `${job.name || job.id}${job.kind && job.kind !== 'call' ? ` (${job.kind})` : ''}`);
    setText(this.status, words);
    setAttr(this.status, 'data-status', job.status ?? '');
    setAttr(this.status, 'data-state', css);
    setAttr(this.node, 'data-status', job.status ?? '');
    const cancellable = CANCELLABLE.has(job.status ?? '');
    this.cancelButton.hidden = !cancellable;

    const facts: [string, Node | string][] = [
      ['id', job.id],
      ['endpoint', where(job) || '—'],
      ['GPU', job.gpu || 'CPU'],
      ['worker', job.worker || '—'],
      ['submitted', clock(job.submitted_at) || '—'],
      ['started', clock(job.started_at) || '—'],
      ['finished', clock(job.finished_at) || '—'],
      ['time', timing(job, now) || '—'],
      ['cost', usd(job.cost_usd)]
    ];
    if (job.source) {
      const cell = job.cell !== null && job.cell !== undefined && job.cell !== '' ? `, cell ${job.cell}` : '';
      // The server says where the source lies under its root; older servers do not, then
      // it is worked out here from the page's serverRoot.
      const path = job.source_path !== undefined ? job.source_path : serverPath(job.source);
      if (path !== null) {
        // A file this Jupyter server can open: a link that opens it.
        const link = h('a', { href: '#', class: 'rp-link', 'data-role': 'source', title: `open ${path}` }, `${path}${cell}`);
        link.addEventListener('click', event => {
          event.preventDefault();
          this.openSource(path);
        });
        facts.push(['from', link]);
      } else {
        facts.push(['from', h('span', { 'data-role': 'source' }, `${job.source}${cell}`)]);
      }
    }
    const key = JSON.stringify(facts.map(([k, v]) => [k, typeof v === 'string' ? v : v.textContent]));
    if (this.facts.dataset.key !== key) {
      this.facts.dataset.key = key;
      this.facts.replaceChildren(...facts.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
    }

    const failed = !!job.error || job.status === 'FAILED' || job.status === 'TIMED_OUT';
    this.error.hidden = !failed;
    if (failed) {
      setText(this.errorLine, firstLine(job.error) || `the job ${(job.status ?? '').toLowerCase().replace('_', ' ')}`);
      setText(this.traceback, job.traceback || 'No traceback was recorded.');
    }
    if (FINAL.has(job.status ?? '') && job.logs_size !== null && job.logs_size !== undefined && this.offset >= job.logs_size) {
      this.logsDone = true;
      this.updateLogNote();
    }
  }

  private async cancel(): Promise<void> {
    if (this.busy) {
      return;
    }
    this.busy = true;
    this.cancelButton.disabled = true;
    setText(this.cancelButton, 'Cancelling');
    try {
      await requestAPI(`jobs/${encodeURIComponent(this.jobId)}/cancel`, { method: 'POST' });
      await this.refresh();
    } catch (err) {
      this.showProblem(`Cancel: ${(err as Error).message}`);
    } finally {
      this.busy = false;
      this.cancelButton.disabled = false;
      setText(this.cancelButton, 'Cancel');
    }
  }

  private showProblem(message: string | null): void {
    setText(this.problem, message ?? '');
    this.problem.hidden = message === null;
  }
}

/**
 * A job's source as a path this Jupyter server can open (relative to its root), or null
 * when it is not a file under the root (a script elsewhere, the CLI).
 */
export function serverPath(source: string): string | null {
  const root = (PageConfig.getOption('serverRoot') || '').replace(/\/+$/, '');
  if (source.startsWith('/')) {
    if (root && source.startsWith(`${root}/`)) {
      return source.slice(root.length + 1);
    }
    return null;
  }
  // A relative notebook path is the server's (where Jupyter started it); a relative script
  // path is relative to wherever it ran, unknown here.
  return source.endsWith('.ipynb') && !source.startsWith('..') ? source.replace(/^\.\//, '') : null;
}

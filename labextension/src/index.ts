/**
 * bpfmagic-cells: `%%bpf` cells are edited and highlighted as C in JupyterLab 4.
 *
 * A cell magic has no supported way to name its language (jupyterlab#3869,
 * ipython#14140): the notebook gives every code cell the kernel's mimetype.
 * This plugin watches the code cells of every notebook and gives the ones
 * whose source starts with `%%bpf` the C mimetype (CodeMirror's C language),
 * again whenever the notebook resets it (a kernel's language_info arriving),
 * and gives a cell that stops being `%%bpf` the notebook's mimetype back.
 *
 * JupyterLab 4's highlight style has no colour for C type names (`int`, `u64`,
 * `struct xdp_md`), so it also colours type names in C editors as JupyterLab 3
 * did (CodeMirror 5's clike types: --jp-mirror-editor-variable-3-color).
 */
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICellModel } from '@jupyterlab/cells';
import { CodeEditor } from '@jupyterlab/codeeditor';
import { EditorExtensionRegistry, IEditorExtensionRegistry, IEditorLanguageRegistry } from '@jupyterlab/codemirror';
import { HighlightStyle, Language, syntaxHighlighting } from '@codemirror/language';
import { tags } from '@lezer/highlight';
import { INotebookModel, INotebookTracker, Notebook, NotebookPanel } from '@jupyterlab/notebook';

export const PLUGIN_ID = 'bpfmagic-cells:plugin';
export const C_MIMETYPE = 'text/x-csrc';

// IPython drops leading empty lines before it looks for a cell magic.
const BPF_CELL = /^(?:[ \t]*\r?\n)*%%bpf(?:\s|$)/;

export function isBpfCell(source: string): boolean {
  return BPF_CELL.test(source);
}

class BpfCells {
  // the notebook of each watched cell: its codeMimetype is what a cell returns to
  private notebookOf = new WeakMap<ICellModel, Notebook>();
  // cells given C by this plugin (a cell another extension gave C is not ours to reset)
  private madeC = new WeakSet<ICellModel>();

  constructor(private languages: IEditorLanguageRegistry) {}

  watchNotebook(notebook: Notebook): void {
    notebook.modelChanged.connect(() => this.watchModel(notebook), this);
    this.watchModel(notebook);
  }

  private watchModel(notebook: Notebook): void {
    const model: INotebookModel | null = notebook.model;
    if (!model) {
      return;
    }
    for (const cell of model.cells) {
      this.watchCell(notebook, cell);
    }
    model.cells.changed.connect((_, change) => {
      if (change.type === 'add' || change.type === 'set') {
        change.newValues.forEach(cell => this.watchCell(notebook, cell));
      }
    }, this);
  }

  private watchCell(notebook: Notebook, cell: ICellModel): void {
    if (cell.type !== 'code') {
      return;
    }
    this.notebookOf.set(cell, notebook);
    // connect() ignores a slot already connected with the same thisArg: a cell seen twice is watched once
    cell.contentChanged.connect(this.update, this);
    cell.mimeTypeChanged.connect(this.onMimeTypeChanged, this);
    this.update(cell);
  }

  /** The mimetype `cell` should have, or null to leave it as it is. */
  private wanted(cell: ICellModel): string | null {
    if (isBpfCell(cell.sharedModel.getSource())) {
      return C_MIMETYPE;
    }
    if (cell.mimeType === C_MIMETYPE && this.madeC.has(cell)) {
      return this.notebookOf.get(cell)?.codeMimetype ?? null;
    }
    return null;
  }

  private onMimeTypeChanged(model: CodeEditor.IModel): void {
    this.update(model as ICellModel); // a cell model is its own editor model: the sender is the cell
  }

  private update(cell: ICellModel): void {
    if (cell.isDisposed) {
      return;
    }
    const mimeType = this.wanted(cell);
    if (mimeType && mimeType !== cell.mimeType) {
      void this.setMimeType(cell, mimeType);
    }
  }

  private async setMimeType(cell: ICellModel, mimeType: string): Promise<void> {
    // The editor loads the language of each mimetype it is given asynchronously and applies
    // whichever load finishes last. Once both languages are loaded (and the editor's pending
    // load has been applied, before the next macrotask), the one set last is the one shown.
    await Promise.all([this.languages.getLanguage(mimeType), this.languages.getLanguage(cell.mimeType)]).catch(() => undefined);
    await new Promise(resolve => setTimeout(resolve, 0));
    if (cell.isDisposed) {
      return;
    }
    const now = this.wanted(cell); // the source may have changed meanwhile
    if (!now || now === cell.mimeType) {
      return;
    }
    if (now === C_MIMETYPE) {
      this.madeC.add(cell);
    } else {
      this.madeC.delete(cell);
    }
    cell.mimeType = now;
  }
}

/** Type names coloured in C editors only (scoped to C's language, so no other language changes). */
function cTypeNames(c: Language) {
  return syntaxHighlighting(HighlightStyle.define([{ tag: tags.typeName, color: 'var(--jp-mirror-editor-variable-3-color)' }], { scope: c }));
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Edits and highlights %%bpf cells (bpfmagic) as C.',
  autoStart: true,
  requires: [INotebookTracker, IEditorLanguageRegistry, IEditorExtensionRegistry],
  activate: async (
    _app: JupyterFrontEnd,
    tracker: INotebookTracker,
    languages: IEditorLanguageRegistry,
    extensions: IEditorExtensionRegistry
  ) => {
    // JupyterLab opens documents only once its start-up plugins are activated: awaiting C here,
    // every editor gets the type colours and the first %%bpf cell need not wait for C.
    // Without C (it failed to load), cells are still watched: they get C when it loads.
    const c = (await languages.getLanguage(C_MIMETYPE).catch(() => null))?.support?.language;
    if (c) {
      extensions.addExtension({
        name: `${PLUGIN_ID}:c-type-names`,
        factory: () => EditorExtensionRegistry.createImmutableExtension(cTypeNames(c))
      });
    }
    const cells = new BpfCells(languages);
    tracker.forEach((panel: NotebookPanel) => cells.watchNotebook(panel.content));
    tracker.widgetAdded.connect((_, panel) => cells.watchNotebook(panel.content));
  }
};

export default plugin;

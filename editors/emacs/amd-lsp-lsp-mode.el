;;; amd-lsp-lsp-mode.el --- amd-lsp completions through lsp-mode  -*- lexical-binding: t; -*-

;; Registers amd-lsp as an lsp-mode *add-on* client: it runs beside the language's own server
;; (pyright, rust-analyzer, ...) and adds its suggestions to the completion list
;; (`textDocument/completion': lsp-mode has no inline ghost text).
;;
;; Usage (init.el):
;;   (add-to-list 'load-path "/path/to/amd-lsp/editors/emacs")
;;   (require 'amd-lsp-lsp-mode)
;;   (setq amd-lsp-model "~/models/amd-llama-135m-code.q8_0.gguf")
;;   (add-hook 'python-mode-hook #'lsp-deferred)

;;; Code:

(require 'lsp-mode)
(require 'amd-lsp)

(defcustom amd-lsp-languages
  '("python" "rust" "c" "cpp" "go" "java" "javascript" "typescript" "lua" "shellscript")
  "LSP language ids amd-lsp is started for."
  :type '(repeat string)
  :group 'amd-lsp)

(lsp-register-client
 (make-lsp-client
  :new-connection (lsp-stdio-connection (lambda () amd-lsp-command))
  :activation-fn (lambda (&rest _) (member (lsp-buffer-language) amd-lsp-languages))
  :add-on? t
  :priority -1
  :server-id 'amd-lsp
  :initialization-options #'amd-lsp-initialization-options))

(provide 'amd-lsp-lsp-mode)
;;; amd-lsp-lsp-mode.el ends here

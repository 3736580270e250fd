;;; emacs_lsp_mode.el --- drive amd-lsp from a real Emacs through lsp-mode  -*- lexical-binding: t; -*-
;; Run: emacs --batch -l tests/editors/emacs_lsp_mode.el BIN MODEL
;; Loads editors/emacs/amd-lsp-lsp-mode.el (an add-on client), opens a Python buffer, starts
;; lsp-mode with only amd-lsp available, and completes through `completion-at-point'.

(package-initialize)
(add-to-list 'load-path (expand-file-name "editors/emacs"))
(defvar amd-test-passed 0)
(defun amd-test-check (name ok &optional detail)
  (unless ok
    (princ (format "emacs_lsp_mode: FAIL: %s%s\n" name (if detail (format ": %S" detail) ""))
           #'external-debugging-output)
    (kill-emacs 1))
  (setq amd-test-passed (1+ amd-test-passed)))

(let* ((bin (nth 0 command-line-args-left))
       (model (nth 1 command-line-args-left))
       (dir (file-name-as-directory (make-temp-file "amd-lsp-mode" t)))
       (file (expand-file-name "main.py" dir)))
  (setq command-line-args-left nil)
  (setq user-emacs-directory (file-name-as-directory (make-temp-file "amd-emacs-home" t))
        lsp-session-file (expand-file-name "lsp-session" user-emacs-directory)
        lsp-auto-guess-root nil
        lsp-enable-file-watchers nil
        lsp-headerline-breadcrumb-enable nil
        lsp-modeline-code-actions-enable nil
        lsp-modeline-diagnostics-enable nil
        lsp-enable-suggest-server-download nil
        inhibit-message t)
  (require 'amd-lsp-lsp-mode)
  (setq amd-lsp-command (list bin "--stdio")
        amd-lsp-model model
        amd-lsp-settings '(:debounceMs 0 :maxTokens 12))
  ;; Only amd-lsp: no other Python server is installed here.
  (setq lsp-disabled-clients '(pyls pylsp mspyls pyright jedi ruff-lsp semgrep-ls))
  (with-temp-file file (insert "import os\n\n\ndef load(path):\n    return open(pa"))
  (find-file file)
  (python-mode)
  (lsp-workspace-folders-add dir)
  (goto-char (point-max))
  (insert "th")
  (lsp)
  (let ((deadline (+ (float-time) 30)))
    (while (and (< (float-time) deadline)
                (not (and (lsp-workspaces)
                          (eq (lsp--workspace-status (car (lsp-workspaces))) 'initialized))))
      (accept-process-output nil 0.05)))
  (amd-test-check "lsp-mode started amd-lsp for the buffer"
                  (equal (mapcar (lambda (w) (lsp--client-server-id (lsp--workspace-client w)))
                                 (lsp-workspaces))
                         '(amd-lsp)))
  (let ((deadline (+ (float-time) 30)) status)
    (while (and (< (float-time) deadline)
                (not (equal (gethash "state" (setq status (lsp-request "amd/status" nil))) "ready")))
      (sleep-for 0.05))
    (amd-test-check "the model is ready" (equal (gethash "state" status) "ready")))
  (let* ((capf (lsp-completion-at-point))
         (start (nth 0 capf)) (end (nth 1 capf))
         (cands (all-completions (buffer-substring-no-properties start end) (nth 2 capf))))
    (amd-test-check "one suggestion that extends the word"
                    (and (= (length cands) 1) (string-prefix-p "path" (car cands))) cands)
    (let ((completion-auto-help nil)) (completion-at-point))
    (let ((line (buffer-substring-no-properties (line-beginning-position) (point-max))))
      (amd-test-check "accepting inserts the suggestion"
                      (and (string-prefix-p "    return open(path" line)
                           (> (length line) (length "    return open(path")))
                      line)
      (princ (format "emacs_lsp_mode: accepted %S\n" line))))
  (lsp-workspace-shutdown (car (lsp-workspaces)))
  (set-buffer-modified-p nil)
  (princ (format "emacs_lsp_mode: %d passed, 0 failed\n" amd-test-passed))
  (kill-emacs 0))
